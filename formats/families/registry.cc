// formats/families/registry.cc — the list of supported families (explicit: a static library would drop
// self-registering objects), lookup by HF model_type, role names, and config.json dispatch.
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool {

std::vector<const Family*> all_families() {
  return {&llama_family(),     &mistral_family(),   &qwen2_family(),
          &qwen3_family(),     &mixtral_family(),   &qwen2_moe_family(),
          &qwen3_moe_family(), &olmoe_family(),     &deepseek_v3_family()};
}

static std::string supported_list() {
  std::string s;
  for (const Family* f : all_families()) s += (s.empty() ? "" : ", ") + f->name();
  return s;
}

const Family& family_by_name(const std::string& model_type) {
  for (const Family* f : all_families())
    if (f->name() == model_type) return *f;
  fail("unsupported model_type '", model_type, "' (supported: ", supported_list(), ")");
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) fail(path, ": expected a JSON object, got ", fam::describe(j));
  auto mt = j.find("model_type");
  if (mt == j.end() || mt->is_null()) fail(path, ": missing required key 'model_type'");
  if (!mt->is_string()) fail(path, ": key 'model_type': expected a string, got ", fam::describe(*mt));
  const std::string name = mt->get<std::string>();
  for (const Family* f : all_families())
    if (f->name() == name) return f->parse_config(j, path);
  fail(path, ": unsupported model_type '", name, "' (supported: ", supported_list(), ")");
}

bool is_expert_role(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

bool is_matrix_role(Role r) {
  switch (r) {
    case Role::Embed: case Role::LmHead:
    case Role::Q: case Role::K: case Role::V: case Role::O:
    case Role::QA: case Role::QB: case Role::KVA: case Role::KVB:
    case Role::Gate: case Role::Up: case Role::Down:
    case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown:
    case Role::SharedGate: case Role::SharedUp: case Role::SharedDown:
      return true;
    default:
      return false;
  }
}

const char* role_name(Role r) {
  switch (r) {
    case Role::Embed: return "embed";
    case Role::LmHead: return "lm_head";
    case Role::FinalNorm: return "final_norm";
    case Role::AttnNorm: return "attn_norm";
    case Role::FfnNorm: return "ffn_norm";
    case Role::Q: return "q";
    case Role::K: return "k";
    case Role::V: return "v";
    case Role::O: return "o";
    case Role::QBias: return "q_bias";
    case Role::KBias: return "k_bias";
    case Role::VBias: return "v_bias";
    case Role::OBias: return "o_bias";
    case Role::QNorm: return "q_norm";
    case Role::KNorm: return "k_norm";
    case Role::QA: return "q_a";
    case Role::QANorm: return "q_a_norm";
    case Role::QB: return "q_b";
    case Role::KVA: return "kv_a";
    case Role::KVANorm: return "kv_a_norm";
    case Role::KVB: return "kv_b";
    case Role::Gate: return "gate";
    case Role::Up: return "up";
    case Role::Down: return "down";
    case Role::GateBias: return "gate_bias";
    case Role::UpBias: return "up_bias";
    case Role::DownBias: return "down_bias";
    case Role::Router: return "router";
    case Role::RouterBias: return "router_bias";
    case Role::ExpertGate: return "expert_gate";
    case Role::ExpertUp: return "expert_up";
    case Role::ExpertDown: return "expert_down";
    case Role::SharedGate: return "shared_gate";
    case Role::SharedUp: return "shared_up";
    case Role::SharedDown: return "shared_down";
    case Role::SharedExpertGate: return "shared_expert_gate";
  }
  return "unknown";
}

}  // namespace moetool
