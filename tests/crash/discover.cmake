# Run after crash_tests is built: one ctest test per workload it lists, so ctest -j
# runs them in parallel and a failure names its workload. Listing failures are fatal.
execute_process(COMMAND ${EXE} --list OUTPUT_VARIABLE names RESULT_VARIABLE rc ERROR_VARIABLE err
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT names)
  message(FATAL_ERROR "crash_tests --list failed (${rc}): ${err}")
endif()
string(REPLACE "\n" ";" names "${names}")
set(content "")
foreach(name IN LISTS names)
  string(APPEND content "add_test([=[crash/${name}]=] [==[${EXE}]==] [=[${name}]=])\n")
  string(APPEND content "set_tests_properties([=[crash/${name}]=] PROPERTIES LABELS \"crash\" TIMEOUT ${TIMEOUT})\n")
endforeach()
file(WRITE ${OUT} "${content}")
