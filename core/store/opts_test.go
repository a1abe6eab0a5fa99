package store

import "github.com/shalestore/shale/core/alloc"

var allocOpts = alloc.Options{Ahead: 3, MaxFrontier: 32}
