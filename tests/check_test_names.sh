#!/bin/sh
# ctest learns Catch2 test names from a list that CMake splits at ';', so a TEST_CASE name containing ';'
# becomes fragments that run no test and pass. Fail on any such name (prints file:line).
if grep -rnE 'TEST_CASE\("[^"]*;' "$1" --include='*.cpp'; then
  echo "test names above contain ';': ctest would split them into empty passing tests; use ',' instead" >&2
  exit 1
fi
echo "no test name contains ';'"
