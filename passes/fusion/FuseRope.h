// fuse-rope: lift rotate-half and interleaved rotary position embeddings into
// com.microsoft::RotaryEmbedding.
#pragma once

#include "passes/Pass.h"

namespace llmopt {

/// RoPE as HF's apply_rotary_pos_emb exports it, on q or k laid out [B, N, S, H]:
///
///   %x1 = Slice(%x, [0], [H/2], [-1])          %x2 = Slice(%x, [H/2], [max], [-1])
///   %r  = Concat(Neg(%x2), %x1, axis=-1)
///   %y  = Add(Mul(%x, %cos), Mul(%r, %sin))
///     with %cos = Unsqueeze(Cos(Concat(%f, %f, axis=-1)), [1]), %sin likewise, %f [1, S, H/2]
///   =>
///   %y  = com.microsoft::RotaryEmbedding(%x, [0], Reshape(Cos(%f), [-1, H/2]),
///                                        Reshape(Sin(%f), [-1, H/2]))  {interleaved=0}
///
/// Or, as older HF exports write it, %cos = Unsqueeze(Gather(%cos_table, %position_ids), [1])
/// with a constant [P, H] table of equal halves: the caches are the tables' first halves
/// and position_ids pass through.
///
/// Interleaved (GPT-J's rotate_every_two), {interleaved=1}, the same caches:
///   %r  = Reshape(Concat(Unsqueeze(Neg(Slice(%x, 1::2)), -1), Unsqueeze(Slice(%x, 0::2), -1),
///                        axis=-1), [.., H])
///   with %cos = Unsqueeze(Cos(pairs(%f))) or Unsqueeze(pairs(Cos(%f))), pairs(%v) =
///   Reshape(Concat(Unsqueeze(%v, -1), Unsqueeze(%v, -1), axis=-1), [.., H]); or tables
///   whose entries 2i and 2i+1 are equal (the caches: the even entries).
///
/// The caches hold the positions the graph computed (row s = the s-th query of this
/// call), so position_ids is the single offset 0; they are built once per %f and shared
/// by every layer. Mul/Add operands in either order. Not lifted (counted as near-misses
/// where the rotation matched): cos/sin of neither form (or of the other rotation's), frequencies
/// that vary over the batch, a [B, S, N, H] layout.
class FuseRopePass : public Pass {
public:
  std::string_view name() const override { return "fuse-rope"; }
  Expected<PreservedAnalyses> run(Model &m, AnalysisManager &am) override;
};

} // namespace llmopt
