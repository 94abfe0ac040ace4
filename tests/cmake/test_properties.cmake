# How a test's base timeout becomes its ctest TIMEOUT and LABELS. Shared by tests/CMakeLists.txt
# and tests/cmake/unit_suites.cmake (the post-build step that adds the unit tests), which both
# set QIMG_TEST_TIMEOUT_SCALE first.

# Base timeouts are seconds for the normal build, about 3-5 times what a test took in
# `ctest -j2` on two shared cores, at least 30. Scaled by QIMG_TEST_TIMEOUT_SCALE.
# Tests with a base of 180 s or more (they took 30 s or more) are also labelled `slow`.
function(qimg_timeout_and_labels base out_timeout out_labels)
  math(EXPR timeout "${base} * ${QIMG_TEST_TIMEOUT_SCALE}")
  set(labels ${ARGN})
  if(base GREATER_EQUAL 180)
    list(APPEND labels slow)
  endif()
  set(${out_timeout} ${timeout} PARENT_SCOPE)
  set(${out_labels} "${labels}" PARENT_SCOPE)
endfunction()

# The seconds of the "NAME=SECONDS" entry for name in the list timeouts, else default.
function(qimg_base_timeout timeouts name default out)
  set(seconds ${default})
  foreach(entry IN LISTS timeouts)
    if(entry MATCHES "^(.*)=([0-9]+)$" AND CMAKE_MATCH_1 STREQUAL name)
      set(seconds ${CMAKE_MATCH_2})
    endif()
  endforeach()
  set(${out} ${seconds} PARENT_SCOPE)
endfunction()
