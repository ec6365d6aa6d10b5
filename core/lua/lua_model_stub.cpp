// Temporary: used only while the model runtime (core/model, core/tokenizer, core/run) is not in the tree.
#include "core/lua/lua_model.h"

#include <initializer_list>

namespace nscope::lua {
namespace {
int no_model(lua_State* L) { return luaL_error(L, "this nscope was built without the model runtime"); }
}  // namespace

void register_model_api(lua_State* L, int nscope_idx, int internal_idx) {
    (void)internal_idx;
    nscope_idx = lua_absindex(L, nscope_idx);
    for (const char* name : {"load", "analyze", "export", "recipe"}) {
        lua_pushcfunction(L, no_model);
        lua_setfield(L, nscope_idx, name);
    }
}
}  // namespace nscope::lua
