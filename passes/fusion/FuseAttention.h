// fuse-attention: lift scaled dot-product attention into ORT's GroupQueryAttention /
// MultiHeadAttention.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// Attention as HF's eager code exports it, heads split by Reshape + Transpose:
///
///   %q = [RotaryEmbedding](Transpose(Reshape(%q3, [b, s, N, H]), [0,2,1,3]))
///   %k = repeat_kv([Concat(%past_k, [RotaryEmbedding](heads(%k3)), axis=2)])   (likewise %v)
///   %p = Softmax(Add(Div(MatMul(%q, Transpose(%k, [0,1,3,2])), c), %mask))
///   %y = Reshape(Transpose(MatMul(%p, %v), [0,2,1,3]), [b, s, N*H])
///   =>
///   causal %mask (Where(LessOrEqual(key pos, query pos), 0, -big)), any N / Nkv:
///     %y, %present_k, %present_v = com.microsoft::GroupQueryAttention(RotaryEmbedding(%q3),
///         RotaryEmbedding(%k3), %v3, %past_k, %past_v, seqlens_k, total_len)
///   padding %mask ((1 - Cast(Unsqueeze(%m))) * -big) or none, Nkv = N, no past:
///     %y = com.microsoft::MultiHeadAttention(%q3, %k3, %v3, key_padding_mask=Cast(%m, i32))
///
/// repeat_kv is Reshape(Expand(Unsqueeze(x, [2]), ..), ..); a cache update (Concat with a
/// past graph input on axis 2) becomes GQA's present output. RoPE moves onto the
/// [B, S, N*H] projections (fuse-rope first). scale = 1/c (Div) or c (Mul). Anything
/// else around the Softmax that matched (an unknown mask, a layout other than
/// [B, N, S, H], GQA's positions with a padding mask) is a reported near-miss.
class FuseAttentionPass : public Pass {
public:
  std::string_view name() const override { return "fuse-attention"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt
