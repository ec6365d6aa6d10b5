#include "core/sae/sae_adapter.h"

#include <memory>

#include "core/model/hook_dispatch.h"
#include "core/sae/sae.h"
#include "nscope/error.h"

namespace nscope {
namespace {

// The model adapter with SAE hook points: base hooks keep their order, each `.sae` point follows its hook.
class SaeAdapter : public ModelAdapter {
public:
    SaeAdapter(std::unique_ptr<ModelAdapter> base, std::vector<HookPoint> hooks, std::vector<std::shared_ptr<Sae>> saes)
        : base_(std::move(base)), hooks_(std::move(hooks)) {
        const auto& inner = base_->hook_points();
        outer_.assign(inner.size(), -1);
        latent_.assign(inner.size(), -1);
        sae_.resize(inner.size());
        for (size_t o = 0, i = 0; o < hooks_.size(); ++o) {
            if (i < inner.size() && hooks_[o].name == inner[i].name) {
                outer_[i++] = static_cast<int>(o);
                continue;
            }
            // A `.sae` point: it follows its base hook (i - 1).
            latent_[i - 1] = static_cast<int>(o);
            for (auto& s : saes)
                if (sae_hook_name(s->config().hook) == hooks_[o].name) sae_[i - 1] = s;
        }
    }

    const ModelInfo& info() const override { return base_->info(); }
    const std::vector<HookPoint>& hook_points() const override { return hooks_; }
    at::Tensor unembed(const at::Tensor& resid) const override { return base_->unembed(resid); }
    std::vector<std::pair<std::string, at::Tensor>> named_parameters() override { return base_->named_parameters(); }

    at::Tensor forward(const ForwardInput& input, HookDispatcher* hooks) override {
        if (hooks == nullptr) return base_->forward(input, nullptr);
        Relay relay(*this, *hooks);
        return base_->forward(input, &relay);
    }

private:
    // What the base adapter sees: its own hook ids, translated to ours, with the SAE run in between.
    class Relay : public HookDispatcher {
    public:
        Relay(const SaeAdapter& a, HookDispatcher& outer)
            : a_(a), outer_(outer), host_(dynamic_cast<HostHookDispatcher*>(&outer)) {}

        bool wanted(int id) const override {
            const auto i = static_cast<size_t>(id);
            if (id < 0 || i >= a_.outer_.size()) return false;
            return outer_.wanted(a_.outer_[i]) || (a_.latent_[i] >= 0 && outer_.wanted(a_.latent_[i]));
        }

        void fire(int id, at::Tensor& t) override {
            const auto i = static_cast<size_t>(id);
            const int hook = a_.outer_[i], latent = a_.latent_[i];
            if (latent < 0 || !outer_.wanted(latent) || host_ == nullptr) {
                outer_.fire(hook, t);
                return;
            }
            host_->fire_editors(hook, t);
            const Sae& sae = *a_.sae_[i];
            const at::Tensor x = t.to(at::kFloat);
            at::Tensor z = sae.encode(x);
            const bool editable = host_->has_editors(latent);
            const at::Tensor before = editable ? z.clone() : z;
            host_->fire_editors(latent, z);
            host_->fire_observers(latent, z);
            // decode(z') + (x - decode(z)) = x + (z' - z) W_dec: exactly x where no latent changed.
            if (editable && (z.requires_grad() || !z.equal(before)))
                t = (x + at::matmul(z - before, sae.decoder())).to(t.scalar_type());
            host_->fire_observers(hook, t);
        }

    private:
        const SaeAdapter& a_;
        HookDispatcher& outer_;
        HostHookDispatcher* host_;
    };

    std::unique_ptr<ModelAdapter> base_;
    std::vector<HookPoint> hooks_;
    std::vector<int> outer_;   ///< base hook id -> our id
    std::vector<int> latent_;  ///< base hook id -> our id of its `.sae` point (-1: none)
    std::vector<std::shared_ptr<Sae>> sae_;  ///< base hook id -> its SAE
};

}  // namespace

void attach_saes(LoadedModel& model, const std::vector<SaeAttachment>& saes) {
    if (saes.empty()) return;
    if (!model.adapter) throw RuntimeError("attach_saes: the model has no adapter loaded");
    std::vector<HookPoint> hooks = hooks_with_saes(model.adapter->hook_points(), saes);
    std::vector<std::shared_ptr<Sae>> loaded;
    for (const auto& a : saes) {
        auto s = std::make_shared<Sae>(Sae::load(a.path));
        s->config().hook = a.hook;  // where it is attached (it may have been trained elsewhere)
        loaded.push_back(std::move(s));
    }
    model.adapter = std::make_unique<SaeAdapter>(std::move(model.adapter), hooks, std::move(loaded));
    model.handle.hooks = hooks_with_saes(model.handle.hooks, saes);
}

}  // namespace nscope
