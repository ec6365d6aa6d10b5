// The plotly.js bundle, embedded into the plugin at build time with the assembler's .incbin (the file is
// installed from npm into the build tree, see CMakeLists.txt). No run-time files, no network.
#include <cstddef>
#include <string_view>

#ifndef NSCOPE_PLOTLY_JS_PATH
#error "NSCOPE_PLOTLY_JS_PATH must name plotly.min.js (set by plugins/exporters/report/CMakeLists.txt)"
#endif

__asm__(".pushsection .rodata.nscope_plotly, \"a\", @progbits\n"
        ".globl nscope_plotly_begin\n"
        ".hidden nscope_plotly_begin\n"
        "nscope_plotly_begin:\n"
        ".incbin \"" NSCOPE_PLOTLY_JS_PATH "\"\n"
        ".globl nscope_plotly_end\n"
        ".hidden nscope_plotly_end\n"
        "nscope_plotly_end:\n"
        ".byte 0\n"
        ".popsection\n");

extern "C" const char nscope_plotly_begin[];
extern "C" const char nscope_plotly_end[];

namespace nscope_report {

std::string_view plotly_js() {
    return {nscope_plotly_begin, static_cast<size_t>(nscope_plotly_end - nscope_plotly_begin)};
}

std::string_view plotly_version() { return NSCOPE_PLOTLY_VERSION; }

}  // namespace nscope_report
