#include "core/model/hook_dispatch.h"

#include "nscope/error.h"

namespace nscope {

void HostHookDispatcher::add_editor(int id, Editor fn) {
    if (id < 0 || static_cast<size_t>(id) >= hooks_.size()) throw RuntimeError("hook id out of range");
    hooks_[static_cast<size_t>(id)].editors.push_back(std::move(fn));
    wanted_[static_cast<size_t>(id)] = 1;
}

void HostHookDispatcher::add_observer(int id, Observer fn) {
    if (id < 0 || static_cast<size_t>(id) >= hooks_.size()) throw RuntimeError("hook id out of range");
    hooks_[static_cast<size_t>(id)].observers.push_back(std::move(fn));
    wanted_[static_cast<size_t>(id)] = 1;
}

void HostHookDispatcher::clear() {
    std::fill(wanted_.begin(), wanted_.end(), 0);
    for (auto& s : hooks_) s = Slot{};
}

void HostHookDispatcher::fire(int id, at::Tensor& t) {
    fire_editors(id, t);
    fire_observers(id, t);
}

void HostHookDispatcher::fire_editors(int id, at::Tensor& t) {
    if (!wanted(id)) return;
    for (const auto& e : hooks_[static_cast<size_t>(id)].editors) e(id, t);
}

void HostHookDispatcher::fire_observers(int id, const at::Tensor& t) {
    if (!wanted(id)) return;
    for (const auto& o : hooks_[static_cast<size_t>(id)].observers) o(id, t);
}

}  // namespace nscope
