// Command gcd is the original tutorial's gcd service, kept as the baseline
// scripts/bench.sh measures ours against: grpc-go with the generated pb
// package, reflection, and nothing else. Its code is the tutorial's; only
// the flags, the start line and the admin port are added, so that the bench
// drives it exactly as it drives ours.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"runtime"

	context "golang.org/x/net/context"

	"pigcd/original/admin"
	pb "pigcd/original/pb"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

type server struct {
}

func main() {
	listen := flag.String("listen", ":3000", "gRPC address (port 0: any free port)")
	adminListen := flag.String("admin-listen", ":9090", "address of /healthz and /readyz")
	workers := flag.Int("worker-threads", 0, "GOMAXPROCS (0: Go's default, one per core)")
	// Accepted for the bench's command line only: the original has no
	// graceful shutdown, and SIGTERM ends it at once (Go's default).
	flag.Int("shutdown-delay-ms", 0, "ignored")
	flag.Int("drain-timeout-ms", 0, "ignored")
	flag.Parse()
	if *workers > 0 {
		runtime.GOMAXPROCS(*workers)
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("Failed to listen: %v", err)
	}
	s := grpc.NewServer()

	pb.RegisterGCDServiceServer(s, &server{})
	reflection.Register(s)

	adminAddr, err := admin.Serve(*adminListen)
	if err != nil {
		log.Fatalf("Failed to listen: %v", err)
	}
	fmt.Printf("gcd (original) listening addr=%s admin_addr=%s\n", lis.Addr(), adminAddr)
	if err := s.Serve(lis); err != nil {
		log.Fatalf("Failed to serve: %v", err)
	}
}

func (s *server) Compute(ctx context.Context, r *pb.GCDRequest) (*pb.GCDResponse, error) {
	a, b := r.A, r.B
	for b != 0 {
		a, b = b, a%b
	}
	return &pb.GCDResponse{Result: a}, nil
}
