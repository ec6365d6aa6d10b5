# nscope_embed(TARGET NAMESPACE FUNCTION FILE): embeds FILE's bytes into TARGET at build time (the assembler's
# .incbin, through a source generated from embed.cpp.in) and defines `std::string_view NAMESPACE::FUNCTION()`
# over them (a NUL follows the bytes). The report exporter and `nscope serve` ship plotly.js, figures.js and
# the dashboard this way: nothing is read from disk or fetched at run time. Editing FILE rebuilds the source.
set(NSCOPE_EMBED_TEMPLATE ${CMAKE_CURRENT_LIST_DIR}/embed.cpp.in)

function(nscope_embed target namespace function file)
  set(NSCOPE_EMBED_SYMBOL "nscope_embed_${target}_${function}")
  set(NSCOPE_EMBED_NAMESPACE ${namespace})
  set(NSCOPE_EMBED_FUNCTION ${function})
  set(NSCOPE_EMBED_FILE ${file})
  set(source ${CMAKE_CURRENT_BINARY_DIR}/embed/${target}_${function}.cpp)
  configure_file(${NSCOPE_EMBED_TEMPLATE} ${source} @ONLY)
  target_sources(${target} PRIVATE ${source})
  set_source_files_properties(${source} PROPERTIES OBJECT_DEPENDS ${file})
endfunction()
