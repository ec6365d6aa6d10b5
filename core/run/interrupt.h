// SIGINT / SIGTERM: the first signal asks the run to stop at the next batch boundary (the manifest is
// then marked "interrupted"); a second one terminates at once.
#pragma once

namespace nscope {

void install_interrupt_handlers();
bool interrupt_requested();
/// Which signal asked to stop (0 if none).
int interrupt_signal();

}  // namespace nscope
