# nscope_add_plugin(<name> SOURCES <files...> [MODEL] [OUTPUT_DIRECTORY <dir>])
#
# Builds a NeuronScope plugin as a MODULE library with hidden visibility, C++20 and the SDK on its
# include path. MODEL plugins (model adapters) also link LibTorch (find_package(Torch) first).
# The host loads every lib*.so in its plugin path; point it at OUTPUT_DIRECTORY (default: the current
# binary dir) with --plugin-path or NSCOPE_PLUGIN_PATH.
function(nscope_add_plugin name)
  cmake_parse_arguments(ARG "MODEL" "OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "nscope_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE nscope::sdk)
  target_compile_features(${name} PRIVATE cxx_std_20)
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    PREFIX "lib")
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
  if(ARG_MODEL)
    if(TARGET nscope_torch)
      target_link_libraries(${name} PRIVATE nscope_torch)
    elseif(TORCH_LIBRARIES)
      target_link_libraries(${name} PRIVATE ${TORCH_LIBRARIES})
      target_include_directories(${name} SYSTEM PRIVATE ${TORCH_INCLUDE_DIRS})
    else()
      message(FATAL_ERROR "nscope_add_plugin(${name} MODEL): call find_package(Torch) first")
    endif()
  endif()
  # Refuse undefined symbols at link time rather than at dlopen time.
  target_link_options(${name} PRIVATE -Wl,--no-undefined)
endfunction()
