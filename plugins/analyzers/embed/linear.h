// Principal components of a point matrix for the `embed` analyzer: the optional PCA step before the
// neighbour search, and the PCA initialisation of t-SNE and UMAP.
//
// The covariance is accumulated with nscope_common's CoMoments (the state `pca` uses); its top k eigenvectors
// come from Spectra's Lanczos solver (Debian libspectra-dev; SymEigsSolver on the dense covariance, a fixed
// start vector, so the result is deterministic), or from Eigen's full SelfAdjointEigenSolver when k is close
// to the width. Sign convention as in `pca`: each component's largest-magnitude coefficient is positive.
// Cost: n d²/2 multiply-adds for the covariance, O(d² · ncv · restarts) for Lanczos (ncv = min(d, 2k + 20)).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Spectra/MatOp/DenseSymMatProd.h>
#include <Spectra/SymEigsSolver.h>

#include <nscope/eigen.h>
#include <nscope/sdk.h>

#include "nscope_common/covariance.h"

namespace nscope::embed {

struct Projection {
    RowMatrixXf y;                  ///< [n, k] centred points on the components
    Eigen::VectorXd variance;       ///< [k] variance along each component (population)
    double total_variance = 0;      ///< trace of the covariance
    /// Fraction of the variance the k components keep.
    double kept() const { return total_variance > 0 ? variance.sum() / total_variance : 0.0; }
};

/// The points `x` [n, d] projected on their top k principal components (k < d).
inline Projection principal_components(const RowMatrixXf& x, int64_t k) {
    const int64_t d = x.cols();
    common::CoMoments cov;
    cov.init(d);
    cov.add(x.data(), static_cast<size_t>(x.rows()));
    const Eigen::MatrixXd c = cov.covariance();
    Eigen::MatrixXd vectors(d, k);
    Eigen::VectorXd values(k);
    const int64_t ncv = std::min<int64_t>(d, 2 * k + 20);
    bool done = false;
    if (ncv < d) {
        Spectra::DenseSymMatProd<double> op(c);
        Spectra::SymEigsSolver<Spectra::DenseSymMatProd<double>> eigs(op, static_cast<Eigen::Index>(k),
                                                                      static_cast<Eigen::Index>(ncv));
        eigs.init();
        eigs.compute(Spectra::SortRule::LargestAlge, 1000, 1e-10);
        if (eigs.info() == Spectra::CompInfo::Successful) {
            values = eigs.eigenvalues();
            vectors = eigs.eigenvectors();
            done = true;
        }
    }
    if (!done) {
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(c);
        if (eig.info() != Eigen::Success) throw RuntimeError("embed: eigen-decomposition of the covariance failed");
        for (int64_t i = 0; i < k; ++i) {
            values(i) = eig.eigenvalues()(d - 1 - i);
            vectors.col(i) = eig.eigenvectors().col(d - 1 - i);
        }
    }
    for (int64_t i = 0; i < k; ++i) {
        Eigen::Index arg = 0;
        vectors.col(i).cwiseAbs().maxCoeff(&arg);
        if (vectors(arg, i) < 0) vectors.col(i) = -vectors.col(i);
    }
    Projection p;
    p.variance = values.cwiseMax(0.0);
    p.total_variance = c.trace();
    const Eigen::RowVectorXf mean = cov.mean.transpose().cast<float>();
    p.y.noalias() = (x.rowwise() - mean) * vectors.cast<float>();
    return p;
}

}  // namespace nscope::embed
