// Command gcdserver is a gcd replica written with grpc-go, as the original
// tutorial's was: pb.GCDService/Compute on -listen, and on -admin an HTTP
// /count of the calls it served. With -fail it answers every call with an
// INTERNAL error instead, with -delay only after that long. SIGTERM stops it
// gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pigcd/interop/gcdwire"
)

var (
	served  uint64
	failing = flag.Bool("fail", false, "answer every call with INTERNAL")
	delay   = flag.Duration("delay", 0, "wait this long before answering")
)

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func compute(_ interface{}, ctx context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in gcdwire.Request
	if err := decode(&in); err != nil {
		return nil, err
	}
	atomic.AddUint64(&served, 1)
	select {
	case <-time.After(*delay):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if *failing {
		return nil, status.Error(codes.Internal, "failing on purpose")
	}
	return &gcdwire.Response{Result: gcd(in.A, in.B)}, nil
}

var service = grpc.ServiceDesc{
	ServiceName: "pb.GCDService",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Compute", Handler: compute}},
	Metadata:    "gcd.proto",
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC address")
	admin := flag.String("admin", "127.0.0.1:0", "HTTP address of /count")
	flag.Parse()

	grpcListener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	adminListener, err := net.Listen("tcp", *admin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.CustomCodec(gcdwire.Codec{}))
	server.RegisterService(&service, struct{}{})
	http.HandleFunc("/count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, atomic.LoadUint64(&served))
	})
	go http.Serve(adminListener, nil)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.GracefulStop()
	}()
	fmt.Printf("gcdserver listening addr=%s admin_addr=%s\n", grpcListener.Addr(), adminListener.Addr())
	if err := server.Serve(grpcListener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
