# Post-build step of crash_tests (cmake -P; see tests/CMakeLists.txt): lists its workloads
# into LIST_FILE, from which crash_tests.cmake.in makes one ctest test per workload. A
# listing that fails or lists nothing is fatal and deletes the binary (as unit_suites.cmake).
# Inputs (-D): EXE (the binary), LIST_FILE (the output).
cmake_minimum_required(VERSION 3.20)
file(REMOVE ${LIST_FILE})
execute_process(COMMAND ${EXE} --list OUTPUT_VARIABLE names ERROR_VARIABLE err RESULT_VARIABLE rc
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT names)
  file(REMOVE ${EXE})
  message(FATAL_ERROR "`${EXE} --list` failed (${rc}) or listed nothing; the crash tests cannot be registered:\n${err}")
endif()
string(REPLACE "\n" ";" names "${names}")
file(WRITE ${LIST_FILE} "# Written by tests/cmake/crash_list.cmake after building crash_tests.\n"
     "set(CRASH_TESTS \"${EXE}\")\n"
     "set(CRASH_WORKLOADS \"${names}\")\n")
