// NeuronScope SDK — Eigen maps over activation views (zero-copy).
//
//   auto m = nscope::as_matrix(*batch.find("blocks.0.mlp.hook_post"));   // [b*p, d_mlp], row-major
//   Eigen::VectorXf col_mean = m.colwise().mean();
#pragma once

#include <Eigen/Core>

#include "nscope/activation.h"

namespace nscope {

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// View a float32 activation as a [outer, inner] row-major matrix (rows = every leading index).
inline Eigen::Map<const RowMatrixXf> as_matrix(const ActivationView& v) {
    return Eigen::Map<const RowMatrixXf>(v.f32(), v.outer(), v.inner());
}

/// View one row's [positions, inner] slice of a [rows, positions, inner] activation.
inline Eigen::Map<const RowMatrixXf> row_matrix(const ActivationView& v, size_t row) {
    const int64_t positions = v.shape.size() >= 3 ? v.shape[1] : 1;
    return Eigen::Map<const RowMatrixXf>(v.f32() + row * positions * v.inner(), positions, v.inner());
}

}  // namespace nscope
