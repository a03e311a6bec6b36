// Command gcdclient calls a gcd the way grpc-go clients and the kubelet's
// gRPC probe do, and prints one JSON line: {"code": ..., "result": ...}.
//
//	gcdclient -addr 127.0.0.1:3000 -call compute -a 12 -b 18
//	gcdclient -addr ... -call health     (the kubelet's probe: service "", kube-probe user agent, 1 s)
//	gcdclient -addr ... -call list       (services, by reflection v1alpha: grpc-go 1.33 has no v1)
//	gcdclient -addr ... -call oversize   (a 2 KiB message to Compute)
//	gcdclient -addr ... -call unknown    (a method gcd does not have)
//	gcdclient -addr ... -call deadline   (Compute with a deadline already past)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"pigcd/interop/gcdwire"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "gcd address")
	call := flag.String("call", "compute", "compute, health, list, oversize, unknown or deadline")
	a := flag.Uint64("a", 12, "first operand")
	b := flag.Uint64("b", 18, "second operand")
	flag.Parse()

	// The kubelet's probe dials with its own user agent and no TLS.
	conn, err := grpc.Dial(*addr, grpc.WithInsecure(), grpc.WithUserAgent("kube-probe/1.27"))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	codec := grpc.ForceCodec(gcdwire.Codec{})

	var result string
	switch *call {
	case "compute":
		var out gcdwire.Response
		err = conn.Invoke(ctx, "/pb.GCDService/Compute", &gcdwire.Request{A: *a, B: *b}, &out, codec)
		result = fmt.Sprint(out.Result)
	case "health":
		var out *healthpb.HealthCheckResponse
		out, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
		if out != nil {
			result = out.Status.String()
		}
	case "list":
		result, err = listServices(ctx, conn)
	case "oversize":
		raw := gcdwire.Raw(append([]byte{0x08, 0x0c, 0x1a, 0x80, 0x10}, make([]byte, 2048)...))
		err = conn.Invoke(ctx, "/pb.GCDService/Compute", &raw, &gcdwire.Response{}, codec)
	case "unknown":
		err = conn.Invoke(ctx, "/pb.GCDService/Nope", &gcdwire.Request{A: 1, B: 2}, &gcdwire.Response{}, codec)
	case "deadline":
		past, stop := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer stop()
		err = conn.Invoke(past, "/pb.GCDService/Compute", &gcdwire.Request{A: 1, B: 2}, &gcdwire.Response{}, codec)
	default:
		fail(fmt.Errorf("unknown -call %q", *call))
	}
	print(status.Code(err).String(), result)
}

func listServices(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return "", err
	}
	request := &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: ""},
	}
	if err := stream.Send(request); err != nil {
		return "", err
	}
	reply, err := stream.Recv()
	if err != nil {
		return "", err
	}
	var names []string
	for _, service := range reply.GetListServicesResponse().GetService() {
		names = append(names, service.GetName())
	}
	sort.Strings(names)
	return strings.Join(names, ","), stream.CloseSend()
}

func print(code, result string) {
	line, _ := json.Marshal(map[string]string{"code": code, "result": result})
	fmt.Println(string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(2)
}
