// The host side of the SDK's two-phase HookDispatcher: `wanted(id)` is a bit test; `fire` runs the
// editors (interventions) registered for the hook, then the observers (captures), in registration order.
// Unobserved hooks cost one bit test.
#pragma once

#include <functional>
#include <vector>

#include "nscope/model_adapter.h"

namespace nscope {

class HostHookDispatcher : public HookDispatcher {
public:
    /// Editors may replace the tensor; observers only look at it (what flows downstream after the edits).
    using Editor = std::function<void(int id, at::Tensor& t)>;
    using Observer = std::function<void(int id, const at::Tensor& t)>;

    explicit HostHookDispatcher(size_t n_hooks) : wanted_(n_hooks, 0), hooks_(n_hooks) {}

    void add_editor(int id, Editor fn);
    void add_observer(int id, Observer fn);
    /// Drop every editor and observer (hooks added for one run are removed at its end).
    void clear();

    bool wanted(int id) const override {
        return id >= 0 && static_cast<size_t>(id) < wanted_.size() && wanted_[static_cast<size_t>(id)] != 0;
    }
    void fire(int id, at::Tensor& t) override;
    /// The two halves of `fire`, for hosts that run code between the edits and the observers (SAE hooks).
    void fire_editors(int id, at::Tensor& t);
    void fire_observers(int id, const at::Tensor& t);
    bool has_editors(int id) const { return wanted(id) && !hooks_[static_cast<size_t>(id)].editors.empty(); }

private:
    struct Slot {
        std::vector<Editor> editors;
        std::vector<Observer> observers;
    };
    std::vector<uint8_t> wanted_;
    std::vector<Slot> hooks_;
};

}  // namespace nscope
