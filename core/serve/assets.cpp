// .incbin the dashboard's files (paths from core/serve/CMakeLists.txt), like the report exporter's bundles.cpp.
#include "core/serve/assets.h"

#include <cstddef>

// Defines the hidden symbols <name>_begin / <name>_end around the bytes of `path`.
#define NSCOPE_SERVE_EMBED(name, path)                          \
    __asm__(".pushsection .rodata." #name ", \"a\", @progbits\n" \
            ".globl " #name "_begin\n"                          \
            ".hidden " #name "_begin\n" #name "_begin:\n"       \
            ".incbin \"" path "\"\n"                            \
            ".globl " #name "_end\n"                            \
            ".hidden " #name "_end\n" #name "_end:\n"           \
            ".byte 0\n"                                         \
            ".popsection\n");                                   \
    extern "C" const char name##_begin[];                       \
    extern "C" const char name##_end[];

NSCOPE_SERVE_EMBED(nscope_serve_index, NSCOPE_SERVE_UI_DIR "/index.html")
NSCOPE_SERVE_EMBED(nscope_serve_app, NSCOPE_SERVE_UI_DIR "/app.js")
NSCOPE_SERVE_EMBED(nscope_serve_style, NSCOPE_SERVE_UI_DIR "/style.css")
NSCOPE_SERVE_EMBED(nscope_serve_figures, NSCOPE_FIGURES_JS_PATH)
NSCOPE_SERVE_EMBED(nscope_serve_plotly, NSCOPE_PLOTLY_JS_PATH)

namespace nscope::serve {

#define NSCOPE_SERVE_VIEW(name) \
    std::string_view(name##_begin, static_cast<size_t>(name##_end - name##_begin))

std::string_view ui_index_html() { return NSCOPE_SERVE_VIEW(nscope_serve_index); }
std::string_view ui_app_js() { return NSCOPE_SERVE_VIEW(nscope_serve_app); }
std::string_view ui_style_css() { return NSCOPE_SERVE_VIEW(nscope_serve_style); }
std::string_view figures_js() { return NSCOPE_SERVE_VIEW(nscope_serve_figures); }
std::string_view plotly_js() { return NSCOPE_SERVE_VIEW(nscope_serve_plotly); }

}  // namespace nscope::serve
