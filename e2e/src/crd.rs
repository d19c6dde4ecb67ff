//! Validation of manifests against the Istio CRDs (see e2e/istio-crds).
