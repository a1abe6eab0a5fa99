package nbd

import "sync/atomic"

// Stats is a snapshot of a server's counters since it was created.
type Stats struct {
	// ConnectionsActive is the number of open connections.
	ConnectionsActive int64
	// ConnectionsTotal counts connections accepted (not those refused).
	ConnectionsTotal uint64
	// ConnectionsRefused counts connections over MaxConnections.
	ConnectionsRefused uint64
	// HandshakesFailed counts connections that closed before transmission
	// for any reason other than a clean ABORT or a LIST-only session.
	HandshakesFailed uint64
	// Commands is indexed by command name: read, write, disc, flush, trim,
	// cache, write_zeroes, block_status, and "unknown".
	Commands map[string]CommandStats
	// Errors counts error replies by NBD error name (EINVAL, ENOSPC, ...).
	Errors map[string]uint64
}

// CommandStats counts one kind of request.
type CommandStats struct {
	Requests uint64
	// Bytes is the request length summed over successful requests
	// (payload bytes for READ and WRITE, range length for the others).
	Bytes  uint64
	Errors uint64
}

// cmdSlots has one slot per command plus one for unknown commands.
const cmdSlots = numCommands + 1

type serverStats struct {
	connsActive      atomic.Int64
	connsTotal       atomic.Uint64
	connsRefused     atomic.Uint64
	handshakesFailed atomic.Uint64
	requests         [cmdSlots]atomic.Uint64
	bytes            [cmdSlots]atomic.Uint64
	cmdErrors        [cmdSlots]atomic.Uint64
	errnos           [errIndexOther + 1]atomic.Uint64
}

func cmdSlot(typ uint16) int {
	if int(typ) < numCommands {
		return int(typ)
	}
	return numCommands
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		ConnectionsActive:  s.stats.connsActive.Load(),
		ConnectionsTotal:   s.stats.connsTotal.Load(),
		ConnectionsRefused: s.stats.connsRefused.Load(),
		HandshakesFailed:   s.stats.handshakesFailed.Load(),
		Commands:           make(map[string]CommandStats, cmdSlots),
		Errors:             make(map[string]uint64),
	}
	for i := 0; i < cmdSlots; i++ {
		name := "unknown"
		if i < numCommands {
			name = commandNames[i]
		}
		st.Commands[name] = CommandStats{
			Requests: s.stats.requests[i].Load(),
			Bytes:    s.stats.bytes[i].Load(),
			Errors:   s.stats.cmdErrors[i].Load(),
		}
	}
	for i := range s.stats.errnos {
		n := s.stats.errnos[i].Load()
		if n == 0 {
			continue
		}
		name := "other"
		if i < len(errnoList) {
			name = errnoName(errnoList[i])
		}
		st.Errors[name] = n
	}
	return st
}
