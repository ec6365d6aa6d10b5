# ctest driver: install the SDK from BUILD_ROOT into WORK_DIR/prefix, then configure and build the
# out-of-tree plugin in WORK_DIR/build against it with find_package(NeuronScope).
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_ROOT} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "installing NeuronScope into ${WORK_DIR}/prefix failed (${rc})")
endif()
# In a sanitizer build (SANITIZERS = the host's -fsanitize list) the plugin is instrumented like the host.
set(flags "")
if(SANITIZERS)
  set(flags -DCMAKE_CXX_FLAGS=-fsanitize=${SANITIZERS}\ -fno-sanitize-recover=all\ -fno-omit-frame-pointer
            -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=${SANITIZERS} -DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=${SANITIZERS})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR}
                        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release ${flags}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the out-of-tree plugin failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the out-of-tree plugin failed (${rc})")
endif()
