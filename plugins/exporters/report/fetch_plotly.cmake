# Install the pinned plotly.js-dist-min into DEST with npm and check it (run by CMakeLists.txt at build time):
#   cmake -DNPM=npm -DDEST=<build>/third_party/plotly-<v> -DVERSION=<v> -P fetch_plotly.cmake
# Fails the build with a clear message when npm is missing or the download fails: a report without plots
# would be worse than no build.
set(pkg ${DEST}/node_modules/plotly.js-dist-min)
set(js ${pkg}/plotly.min.js)
if(EXISTS ${js} AND EXISTS ${pkg}/package.json)
  file(READ ${pkg}/package.json manifest)
  string(JSON have ERROR_VARIABLE err GET "${manifest}" version)
  if(have STREQUAL VERSION)
    file(TOUCH ${js})
    return()
  endif()
endif()
if(NOT IS_ABSOLUTE "${NPM}")
  find_program(NPM_PATH npm)
  set(NPM ${NPM_PATH})
endif()
if(NOT NPM OR NOT EXISTS "${NPM}")
  message(FATAL_ERROR "npm is required to build the report exporter: it embeds plotly.js-dist-min@${VERSION} "
                      "from the npm registry. Run scripts/install-deps.sh (installs npm), or configure with "
                      "-DNSCOPE_PLOTLY_JS=/path/to/plotly.min.js.")
endif()
file(MAKE_DIRECTORY ${DEST})
file(WRITE ${DEST}/package.json "{\"name\": \"nscope-plotly\", \"private\": true}\n")
# --ignore-scripts: only the bundle file is wanted; nothing from the package is executed.
execute_process(COMMAND ${NPM} install --prefix ${DEST} --no-audit --no-fund --ignore-scripts --loglevel=error
                        plotly.js-dist-min@${VERSION}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT EXISTS ${js})
  message(FATAL_ERROR "npm install plotly.js-dist-min@${VERSION} failed (exit ${rc}); the report exporter cannot be "
                      "built without plotly.js. Check network access to the npm registry, or configure with "
                      "-DNSCOPE_PLOTLY_JS=/path/to/plotly.min.js.")
endif()
file(READ ${pkg}/package.json manifest)
string(JSON have GET "${manifest}" version)
if(NOT have STREQUAL VERSION)
  message(FATAL_ERROR "npm installed plotly.js-dist-min ${have}, expected ${VERSION}")
endif()
# The bundle is inlined into a <script> element: it must not contain a closing script tag.
file(READ ${js} text)
string(TOLOWER "${text}" text)
string(FIND "${text}" "</script" at)
if(NOT at EQUAL -1)
  message(FATAL_ERROR "${js} contains '</script' and cannot be inlined into report.html")
endif()
file(TOUCH ${js})
