//go:build tools

// Package tools only pins the programs tools/controlplane/build compiles; it is never built itself.
package tools

import (
	_ "github.com/coredns/coredns"
)
