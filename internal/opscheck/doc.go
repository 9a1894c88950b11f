// Package opscheck tests the deployment artefacts: the systemd unit
// (configs/iot-mns-bridge.service), the Dockerfile and .dockerignore, the
// Debian package's maintainer scripts and the Kubernetes manifests, and,
// through scripts/ops-check.sh, the binary built with the Dockerfile's flags
// running the way the unit and the image run it. Its contract: an artefact
// that does not run the bridge the way it is documented fails a test here,
// not a deployment.
//
// The package has no non-test code beyond this comment.
package opscheck
