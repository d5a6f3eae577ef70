package proxy

// RelayBuffersHeld reports how many copy buffers s's tunnels hold now.
func RelayBuffersHeld(s *Server) int64 { return s.relayBufs.held.Load() }
