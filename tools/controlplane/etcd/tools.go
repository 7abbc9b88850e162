//go:build tools

// Package tools only pins the programs tools/controlplane/build compiles; it is never built itself.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
