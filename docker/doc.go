// Package docker holds the container images and Kubernetes examples of
// metership: docker/agent (the agent's Dockerfile and baked config),
// docker/k8s (sidecar, native sidecar and DaemonSet manifests) and
// docker/fluent-bit. It has no Go code of its own: its tests decode every
// Kubernetes manifest here strictly with the k8s.io/api types, validate every
// metership config with the agent's own loader and check the Dockerfile
// against the agent's package, so a typo fails CI instead of a user's
// kubectl apply. It is a Go module of its own (docker/go.mod, the agent's
// module replaced by ..), so k8s.io stays out of the agent's module graph.
package docker
