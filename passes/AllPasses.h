// Headers of every built-in pass (what Passes.def names).
#pragma once

#include "passes/cleanup/Canonicalize.h"
#include "passes/cleanup/ConstFold.h"
#include "passes/cleanup/Cse.h"
#include "passes/cleanup/Dce.h"
#include "passes/cleanup/FoldShapes.h"
#include "passes/cleanup/Opset.h"
#include "passes/prune/Magnitude.h"
#include "passes/prune/PruneNm.h"
#include "passes/prune/SparseGpt.h"
#include "passes/prune/Wanda.h"
#include "passes/quant/QuantEmbed.h"
#include "passes/quant/QuantHalf.h"
#include "passes/quant/QuantInt4.h"
#include "passes/quant/QuantInt8.h"
#include "passes/quant/QuantMixed.h"
#include "passes/quant/QuantW8A8.h"
