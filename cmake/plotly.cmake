# plotly.js for every viewer that embeds it (the report exporter, `nscope serve`): the pinned
# `plotly.js-dist-min` package is installed from the npm registry into the build tree at build time
# (plugins/exporters/report/fetch_plotly.cmake); targets that embed it depend on `nscope_plotly_js` and read
# the file NSCOPE_PLOTLY_JS_FILE. Nothing is fetched at run time.
# Offline / packaging builds can pass an already downloaded bundle: -DNSCOPE_PLOTLY_JS=/path/to/plotly.min.js.
set(NSCOPE_PLOTLY_VERSION 4.1.2 CACHE STRING "plotly.js-dist-min version embedded in the report and the dashboard")
set(NSCOPE_PLOTLY_JS "" CACHE FILEPATH "Embed this plotly.min.js instead of installing plotly.js-dist-min with npm")

if(NSCOPE_PLOTLY_JS)
  set(NSCOPE_PLOTLY_JS_FILE ${NSCOPE_PLOTLY_JS})
  add_custom_target(nscope_plotly_js)
else()
  find_program(NSCOPE_NPM npm)
  if(NOT NSCOPE_NPM)
    message(WARNING "npm not found: building the report exporter and nscope serve will fail (they embed plotly.js "
                    "from the npm registry). Run scripts/install-deps.sh, or pass -DNSCOPE_PLOTLY_JS=/path/to/plotly.min.js.")
    set(NSCOPE_NPM npm)
  endif()
  set(plotly_dir ${CMAKE_BINARY_DIR}/third_party/plotly-${NSCOPE_PLOTLY_VERSION})
  set(NSCOPE_PLOTLY_JS_FILE ${plotly_dir}/node_modules/plotly.js-dist-min/plotly.min.js)
  set(fetch ${PROJECT_SOURCE_DIR}/plugins/exporters/report/fetch_plotly.cmake)
  add_custom_command(OUTPUT ${NSCOPE_PLOTLY_JS_FILE}
    COMMAND ${CMAKE_COMMAND} -DNPM=${NSCOPE_NPM} -DDEST=${plotly_dir} -DVERSION=${NSCOPE_PLOTLY_VERSION}
            -P ${fetch}
    DEPENDS ${fetch}
    COMMENT "Installing plotly.js-dist-min@${NSCOPE_PLOTLY_VERSION} from npm into ${plotly_dir}"
    VERBATIM)
  add_custom_target(nscope_plotly_js DEPENDS ${NSCOPE_PLOTLY_JS_FILE})
endif()
# figures.js (figure spec -> Plotly), shared the same way.
set(NSCOPE_FIGURES_JS_FILE ${PROJECT_SOURCE_DIR}/plugins/exporters/report/figures.js)
