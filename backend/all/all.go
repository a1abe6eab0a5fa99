// Package all registers every drive backend with package backend. A binary
// that opens devices from configuration imports it for its side effects:
//
//	import _ "github.com/shalestore/shale/backend/all"
package all

import (
	// Registered as "file".
	_ "github.com/shalestore/shale/backend/file"
	// Registered as "nvme".
	_ "github.com/shalestore/shale/backend/nvme"
	// Registered as "sim".
	_ "github.com/shalestore/shale/backend/sim"
)
