// SAE training throughput (bench/sae.sh): nscope's train_sae on activation-shaped batches, the same TopK
// step (AuxK, unit-norm decoder, Adam) as bench/sae_torch.py, which sae.sh runs alongside for the ratio.
//
//   nscope_bench_sae --d-in 768 --latents 6144 --k 32 --batch 1024 --steps 50 --threads 1
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "core/train/sae_trainer.h"

int main(int argc, char** argv) {
    CLI::App app("SAE training throughput");
    int64_t d = 256, latents = 2048, k = 32, batch = 1024, steps = 50;
    int threads = 1;
    app.add_option("--d-in", d);
    app.add_option("--latents", latents);
    app.add_option("--k", k);
    app.add_option("--batch", batch);
    app.add_option("--steps", steps);
    app.add_option("--threads", threads);
    CLI11_PARSE(app, argc, argv);
    at::set_num_threads(threads);
    at::manual_seed(0);
    const at::Tensor data = at::randn({8 * batch, d});  // cycled, as the PyTorch baseline does
    nscope::SaeConfig c;
    c.d_in = d, c.latents = latents, c.k = k;
    nscope::SaeTrainOptions o;
    o.steps = steps, o.batch_tokens = batch, o.k = k, o.log_every = steps, o.eval_tokens = batch;
    o.out = std::filesystem::temp_directory_path() / ("nscope-bench-sae-" + std::to_string(::getpid()));
    const auto r = nscope::train_sae(c, [&](int64_t step) { return data.narrow(0, (step % 8) * batch, batch); }, o);
    std::filesystem::remove_all(o.out);
    std::printf("tokens/s %.0f\n", r.tokens_per_s);
    return 0;
}
