// Files embedded into the plugin at build time with the assembler's .incbin: the plotly.js bundle (installed
// from npm into the build tree, see CMakeLists.txt) and figures.js (the figure spec -> Plotly conversion,
// kept as a file of its own so that other viewers can use it too). No run-time files, no network.
#include <cstddef>
#include <string_view>

#ifndef NSCOPE_PLOTLY_JS_PATH
#error "NSCOPE_PLOTLY_JS_PATH must name plotly.min.js (set by plugins/exporters/report/CMakeLists.txt)"
#endif
#ifndef NSCOPE_FIGURES_JS_PATH
#error "NSCOPE_FIGURES_JS_PATH must name figures.js (set by plugins/exporters/report/CMakeLists.txt)"
#endif

// Defines the hidden symbols <name>_begin / <name>_end around the bytes of `path` (plus a trailing NUL).
#define NSCOPE_EMBED(name, path)                                \
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

NSCOPE_EMBED(nscope_plotly, NSCOPE_PLOTLY_JS_PATH)
NSCOPE_EMBED(nscope_figures, NSCOPE_FIGURES_JS_PATH)

namespace nscope_report {

std::string_view plotly_js() {
    return {nscope_plotly_begin, static_cast<size_t>(nscope_plotly_end - nscope_plotly_begin)};
}

std::string_view plotly_version() { return NSCOPE_PLOTLY_VERSION; }

std::string_view figures_js() {
    return {nscope_figures_begin, static_cast<size_t>(nscope_figures_end - nscope_figures_begin)};
}

}  // namespace nscope_report
