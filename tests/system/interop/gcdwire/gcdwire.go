// Package gcdwire encodes pb.GCDRequest and pb.GCDResponse
// (gcd-proto/gcd.proto) by hand, so that the Go test peers build from Debian's
// grpc-go in GOPATH mode with no generated code and no protoc.
package gcdwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Request is pb.GCDRequest.
type Request struct{ A, B uint64 }

// Response is pb.GCDResponse.
type Response struct{ Result uint64 }

// Raw is a message sent as it is: for requests no real client sends.
type Raw []byte

// Codec is the gRPC codec ("proto") of the three types above.
type Codec struct{}

// Name is the content subtype: these are protobuf messages.
func (Codec) Name() string { return "proto" }

// String names the codec for grpc-go's older Codec interface.
func (Codec) String() string { return "proto" }

// Marshal encodes fields 1 and 2 as varints, leaving out zeros as proto3 does.
func (Codec) Marshal(v interface{}) ([]byte, error) {
	var b []byte
	varint := func(field protowire.Number, value uint64) {
		if value != 0 {
			b = protowire.AppendTag(b, field, protowire.VarintType)
			b = protowire.AppendVarint(b, value)
		}
	}
	switch m := v.(type) {
	case *Request:
		varint(1, m.A)
		varint(2, m.B)
	case *Response:
		varint(1, m.Result)
	case *Raw:
		b = append(b, *m...)
	default:
		return nil, fmt.Errorf("gcdwire: cannot encode %T", v)
	}
	return b, nil
}

// Unmarshal decodes the varint fields it knows and skips the others.
func (Codec) Unmarshal(data []byte, v interface{}) error {
	fields := map[protowire.Number]uint64{}
	for len(data) > 0 {
		field, kind, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		if kind == protowire.VarintType {
			value, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return protowire.ParseError(m)
			}
			fields[field] = value
			data = data[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(field, kind, data)
		if m < 0 {
			return protowire.ParseError(m)
		}
		data = data[m:]
	}
	switch m := v.(type) {
	case *Request:
		m.A, m.B = fields[1], fields[2]
	case *Response:
		m.Result = fields[1]
	default:
		return fmt.Errorf("gcdwire: cannot decode into %T", v)
	}
	return nil
}
