#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "core/model/tensor_allocator.h"
#include "core/util/allocator.h"

// The tests run with the same heap policy and tensor allocator as nscope itself.
int main(int argc, char* argv[]) {
    nscope::tune_allocator();
    nscope::install_tensor_allocator();
    return Catch::Session().run(argc, argv);
}
