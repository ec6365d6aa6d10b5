// The dashboard's files, embedded into the binary at build time (nscope_embed in CMakeLists.txt): the UI (core/serve/ui/), the
// report exporter's figures.js and the plotly.js bundle from npm (cmake/plotly.cmake). Nothing is read from
// disk or fetched at run time.
#pragma once

#include <string_view>

namespace nscope::serve {

std::string_view ui_index_html();
std::string_view ui_app_js();
std::string_view ui_style_css();
std::string_view figures_js();
std::string_view plotly_js();

}  // namespace nscope::serve
