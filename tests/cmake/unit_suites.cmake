# Post-build step of unit_tests (cmake -P; see tests/CMakeLists.txt). Lists the binary's doctest
# test suites and writes LIST_FILE, from which unit_tests.cmake.in makes the ctest tests: one
# unit/<suite> per suite, plus unit/no-suite (--test-suite-exclude of them all) for the test
# cases outside any suite. Before writing, checks with --count that these tests together run
# every test case exactly once and that no suite test runs nothing. Any failure is fatal and
# deletes the binary, so the build fails (and the next one links again) instead of tests going
# missing. Inputs (-D): UNIT_TESTS (the binary), LIST_FILE (the output).
cmake_minimum_required(VERSION 3.20)
file(REMOVE ${LIST_FILE})

# Stops the build. Without the binary, the next build links it again and repeats the check.
function(fail)
  file(REMOVE ${UNIT_TESTS})
  message(FATAL_ERROR ${ARGN})
endfunction()

# Runs the binary with the given arguments; the output in out. A failure is fatal.
function(unit_tests out)
  execute_process(COMMAND ${UNIT_TESTS} ${ARGN} OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    fail("`${UNIT_TESTS} ${ARGN}` failed (${rc}); the unit tests cannot be registered:\n"
                        "${stdout}${stderr}")
  endif()
  set(${out} "${stdout}" PARENT_SCOPE)
endfunction()

# The number of test cases that pass the filter arguments.
function(count_cases out)
  unit_tests(listing --count ${ARGN})
  if(NOT listing MATCHES "passing the current filters: ([0-9]+)")
    fail("`${UNIT_TESTS} --count ${ARGN}` printed no count:\n${listing}")
  endif()
  set(${out} ${CMAKE_MATCH_1} PARENT_SCOPE)
endfunction()

# --list-test-suites prints the names between two lines of '='.
unit_tests(listing --list-test-suites)
if(listing MATCHES ";")
  fail("a test suite name contains ';':\n${listing}")
endif()
string(REPLACE "\n" ";" lines "${listing}")
set(suites "")
set(rules 0)
foreach(line IN LISTS lines)
  if(line MATCHES "^=+$")
    math(EXPR rules "${rules} + 1")
  elseif(rules EQUAL 1)
    # doctest filters are comma-separated, case-insensitive wildcards: names must be plain.
    if(NOT line MATCHES "^[A-Za-z0-9_:.-]+$")
      fail("test suite name '${line}' has characters a --test-suite filter would "
                          "misread (allowed: letters, digits, _ : . -)")
    endif()
    list(APPEND suites "${line}")
  endif()
endforeach()
if(NOT rules EQUAL 2 OR NOT suites)
  fail("could not read the test suites from `${UNIT_TESTS} --list-test-suites`:\n${listing}")
endif()
string(TOLOWER "${suites}" lower)
list(REMOVE_DUPLICATES lower)
list(LENGTH lower distinct)
list(LENGTH suites nsuites)
if(NOT distinct EQUAL nsuites)
  fail("test suite names differing only in case match the same filter: ${suites}")
endif()

# Every test case runs in exactly one of the tests.
count_cases(total)
set(covered 0)
foreach(suite IN LISTS suites)
  count_cases(n --test-suite=${suite})
  if(n EQUAL 0)
    fail("--test-suite=${suite} selects no test case")
  endif()
  math(EXPR covered "${covered} + ${n}")
endforeach()
string(REPLACE ";" "," excluded "${suites}")
count_cases(rest --test-suite-exclude=${excluded})
math(EXPR covered "${covered} + ${rest}")
if(NOT covered EQUAL total)
  fail("the suite tests would run ${covered} test cases, the binary has ${total}")
endif()

set(tests "")
foreach(suite IN LISTS suites)
  list(APPEND tests "${suite}|--test-suite=${suite}")
endforeach()
if(rest GREATER 0)
  list(APPEND tests "no-suite|--test-suite-exclude=${excluded}")
endif()
file(WRITE ${LIST_FILE} "# Written by tests/cmake/unit_suites.cmake after building unit_tests.\n"
     "set(UNIT_TESTS \"${UNIT_TESTS}\")\n"
     "set(UNIT_SUITE_TESTS \"${tests}\")  # name|doctest filter\n")
list(LENGTH tests ntests)
message(STATUS "unit tests: ${total} test cases in ${ntests} ctest tests (${nsuites} suites, ${rest} outside any suite)")
