package hello

// Status says how far a Scanner got with a buffer.
type Status uint8

const (
	// Complete: the whole ClientHello was parsed.
	Complete Status = iota
	// Incomplete: the bytes so far are a valid start of a ClientHello
	// of at most MaxClientHello bytes; the caller should read more.
	Incomplete
	// NotTLS: the bytes are not TLS records carrying a ClientHello,
	// the ClientHello is malformed, or it would need more than
	// MaxClientHello bytes.
	NotTLS
)

func (s Status) String() string {
	switch s {
	case Complete:
		return "complete"
	case Incomplete:
		return "incomplete"
	case NotTLS:
		return "not TLS"
	}
	return "Status(?)"
}

// TLS framing (RFC 8446 sections 4, 5.1 and 6, RFC 6066 section 3).
const (
	tlsRecordHeaderLen     = 5
	tlsMaxRecordLen        = 1 << 14 // TLSPlaintext.length
	tlsRecordTypeCCS       = 20
	tlsRecordTypeAlert     = 21
	tlsRecordTypeHandshake = 22
	tlsHandshakeHeaderLen  = 4
	tlsTypeClientHello     = 1
	tlsTypeServerHello     = 2
	tlsExtServerName       = 0
	tlsSNIHostName         = 0
	tlsAlertLevelWarning   = 1
	tlsAlertCloseNotify    = 0
	tlsAlertUserCanceled   = 90
	maxSNIHostName         = 255
)

// maxClientHelloLen is the longest ClientHello body accepted: Go's
// crypto/tls refuses any handshake message longer than its maxHandshake,
// 64 KiB. OpenSSL 3.0 takes ClientHellos up to about 128 KiB; one between
// the two is answered NotTLS, which the caller treats as a tunnel
// without a usable name. No real client comes near either limit.
const maxClientHelloLen = 1 << 16

// MaxClientHello is the most bytes of a client's stream that the caller
// needs to buffer: Scanner.ClientHelloServerName never answers Incomplete
// for a buffer this long, and answers NotTLS, as soon as the lengths it has
// seen show it, for a ClientHello that would end beyond it.
//
// It is the largest ClientHello Go accepts with its handshake header, plus
// one record's worth (16 KiB) for framing: both servers take a hello cut
// into any number of records, each with a 5-byte header, and OpenSSL also
// takes up to 32 empty records among them. 16 KiB of framing is enough for
// a hello of up to 13 KiB (every real one) cut into one-byte records, and
// for the largest hello in records of 21 bytes or more. A client that cuts
// a large hello finer than that gets NotTLS; a larger limit would only
// let every connection make the proxy buffer more before deciding.
const MaxClientHello = tlsHandshakeHeaderLen + maxClientHelloLen + tlsMaxRecordLen

// Scanner reads the first handshake message of one stream, a ClientHello or
// a ServerHello, as the stream arrives, carrying the parse from call to
// call. Parsing the whole buffer afresh walks every record of it on each
// call, and a caller that calls again with each longer prefix of a stream
// makes that quadratic: a hello cut into one-byte records and sent a byte at
// a time costs some 5*10^8 record steps, seconds of CPU, before
// MaxClientHello is reached. A Scanner remembers the records it has walked,
// so that all the calls together cost time linear in the stream's length.
//
// Its methods answer exactly as they would on a new Scanner, provided each
// call on a scanner passes a prefix of the same stream, at least as long as
// the last one, and always to the same method. (A shorter prefix starts the
// scanner over.) It keeps offsets, not slices, so the caller may move the
// stream to a larger buffer between calls. The zero value is ready to use.
type Scanner struct {
	pos    int  // the first record not walked yet
	have   int  // how many bytes of the message the records before pos hold
	need   int  // the message's length with its header, once known; else 0
	start  int  // where the message's first byte is
	split  bool // the message spans records
	hs     [tlsHandshakeHeaderLen]byte
	walked int // records walked, counted for the tests
}

// message walks the records at the start of data, from the first one it
// has not walked yet, and returns the body (without its 4-byte header) of
// the first handshake message, which must be of type typ, once all of it is
// there: a slice of data when it lies in one record, a copy otherwise. end
// is the offset just past the record that holds its last byte; that record
// may not have arrived whole. With skipCCS, non-empty ChangeCipherSpec
// records are skipped too.
//
// Every check uses only bytes before the point it looks at, and the bytes
// are looked at in stream order, so a prefix that is NotTLS stays so
// whatever follows, and a Complete answer never changes. That is also
// why resuming at the first record not walked gives the same answers.
func (s *Scanner) message(data []byte, typ byte, skipCCS bool) (body []byte, end int, st Status) {
	if len(data) < s.pos {
		*s = Scanner{walked: s.walked}
	}
	// The handshake header may itself be cut by a record boundary, so it
	// is gathered byte by byte; need is the handshake message's length
	// once the header is known.
	hs, have, need := s.hs, s.have, s.need
	if need == 0 {
		need = tlsHandshakeHeaderLen
	}
	start, single := s.start, !s.split // where the message starts; whether in one record
	pos := s.pos                       // start of the current record in data
	for {
		s.walked++
		// The message ends at least need-have bytes after this record's
		// header; one that cannot end within MaxClientHello is refused
		// here, whether or not its bytes have arrived. Skipped records
		// count too, which bounds how many a client can make the proxy
		// walk.
		if pos+tlsRecordHeaderLen+need-have > MaxClientHello {
			return nil, 0, NotTLS
		}
		rec := data[pos:]
		// Judge each header byte as soon as it arrives, so that a stream
		// that is plainly not TLS ("GET ...", "SSH-2.0-...") is known
		// from its first byte.
		if len(rec) > 0 && rec[0] != tlsRecordTypeHandshake && rec[0] != tlsRecordTypeAlert && rec[0] != tlsRecordTypeCCS {
			return nil, 0, NotTLS
		}
		// Go takes any record version below 0x1000 until it has chosen
		// one (it only guards against streams that are not TLS);
		// OpenSSL any 3.x.
		if len(rec) > 1 && rec[1] >= 0x10 {
			return nil, 0, NotTLS
		}
		if len(rec) < tlsRecordHeaderLen {
			return nil, 0, helloMore(pos + tlsRecordHeaderLen + need - have)
		}
		n := int(rec[3])<<8 | int(rec[4])
		if n > tlsMaxRecordLen {
			return nil, 0, NotTLS
		}
		frag := rec[tlsRecordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		next := pos + tlsRecordHeaderLen + n
		switch {
		case n == 0 && rec[0] != tlsRecordTypeAlert:
			// OpenSSL skips empty handshake records anywhere, and an
			// empty ChangeCipherSpec before the ClientHello (skipping
			// it elsewhere too errs on the lenient side); Go refuses
			// both. Both refuse empty alerts.
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		case rec[0] == tlsRecordTypeAlert:
			// An alert is two bytes, level and description.
			if n != 2 {
				return nil, 0, NotTLS
			}
			if len(frag) < n {
				return nil, 0, helloMore(next + tlsRecordHeaderLen + need - have)
			}
			if !helloSkippableAlert(frag[0], frag[1]) {
				return nil, 0, NotTLS
			}
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		case rec[0] == tlsRecordTypeCCS:
			// A ChangeCipherSpec is the one byte 1.
			if !skipCCS || n != 1 {
				return nil, 0, NotTLS
			}
			if len(frag) < n {
				return nil, 0, helloMore(next + tlsRecordHeaderLen + need - have)
			}
			if frag[0] != 1 {
				return nil, 0, NotTLS
			}
			pos = next
			s.save(pos, have, need, start, single, hs)
			continue
		}
		if have == 0 {
			start = pos + tlsRecordHeaderLen
		} else {
			single = false
		}
		avail, before := frag, have
		for have < tlsHandshakeHeaderLen && len(avail) > 0 {
			hs[have] = avail[0]
			avail = avail[1:]
			have++
			if have == 1 && hs[0] != typ {
				return nil, 0, NotTLS
			}
			if have == tlsHandshakeHeaderLen {
				l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
				if l > maxClientHelloLen {
					return nil, 0, NotTLS
				}
				need = tlsHandshakeHeaderLen + l
			}
		}
		have += min(len(avail), need-have)
		if have == need {
			// The header may have arrived in this record, and the
			// whole message with it.
			if pos+tlsRecordHeaderLen+have-before > MaxClientHello {
				return nil, 0, NotTLS
			}
			if single {
				return data[start+tlsHandshakeHeaderLen : start+need], next, Complete
			}
			return helloReassemble(data[start-tlsRecordHeaderLen:], need), next, Complete
		}
		if len(frag) < n {
			// This record goes on past the end of data. The message ends
			// at least need-have bytes further on, and one record header
			// further still if this record cannot hold them.
			more := need - have
			last := len(data) + more
			if more > n-len(frag) {
				last += tlsRecordHeaderLen
			}
			return nil, 0, helloMore(last)
		}
		pos = next
		s.save(pos, have, need, start, single, hs)
	}
}

// save records the walk's state at the start of the record at pos, all
// records before it walked.
func (s *Scanner) save(pos, have, need, start int, single bool, hs [tlsHandshakeHeaderLen]byte) {
	s.pos, s.have, s.need, s.start, s.split, s.hs = pos, have, need, start, !single, hs
}

// helloSkippableAlert reports whether a server ignores an alert of level
// and desc received instead of (part of) a ClientHello. Go drops warning
// alerts other than close_notify before it has chosen a version (up to 16
// ignored records), and user_canceled at any level in TLS 1.3; OpenSSL
// refuses alerts before the first ClientHello and ignores user_canceled in
// TLS 1.3. Skipping both kinds everywhere errs on the lenient side.
func helloSkippableAlert(level, desc byte) bool {
	return level == tlsAlertLevelWarning && desc != tlsAlertCloseNotify || desc == tlsAlertUserCanceled
}

// helloMore is the answer for a valid prefix of a handshake message that
// cannot end before the stream offset end.
func helloMore(end int) Status {
	if end > MaxClientHello {
		return NotTLS
	}
	return Incomplete
}

// helloReassemble copies the body of a handshake message of need bytes
// (header included) out of the records at the start of data, which
// message has checked and found to hold all of it. Only non-empty
// handshake records carry it: the others were skipped.
func helloReassemble(data []byte, need int) []byte {
	msg := make([]byte, 0, need)
	for pos := 0; len(msg) < need; {
		n := int(data[pos+3])<<8 | int(data[pos+4])
		if data[pos] == tlsRecordTypeHandshake {
			frag := data[pos+tlsRecordHeaderLen:]
			frag = frag[:min(len(frag), n, need-len(msg))]
			msg = append(msg, frag...)
		}
		pos += tlsRecordHeaderLen + n
	}
	return msg[tlsHandshakeHeaderLen:]
}
