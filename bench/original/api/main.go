// Command api is the original tutorial's HTTP gateway, kept as the baseline
// scripts/bench.sh measures ours against: gin.Default() in front of one
// grpc.Dial connection to one gcd address (WithInsecure, grpc-go's default
// pick-first, no balancing), answering GET /gcd/:a/:b with {"result":"6"}.
// Its code is the tutorial's; only the flags, the start line, the admin
// port and where gin writes are added, so that the bench drives it exactly
// as it drives ours.
package main

import (
	"flag"
	fmt "fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"google.golang.org/grpc"

	"pigcd/original/admin"
	pb "pigcd/original/pb"
)

func main() {
	listen := flag.String("listen", ":3000", "HTTP address (port 0: any free port)")
	adminListen := flag.String("admin-listen", ":9091", "address of /healthz and /readyz")
	gcdAddrs := flag.String("gcd", "gcd-service:3000", "gcd address; of a comma-separated list, the first")
	workers := flag.Int("worker-threads", 0, "GOMAXPROCS (0: Go's default, one per core)")
	// Accepted for the bench's command lines only: the original has no
	// graceful shutdown (SIGTERM ends it at once, Go's default), no connect
	// timeout and no deadline.
	flag.Int("shutdown-delay-ms", 0, "ignored")
	flag.Int("drain-timeout-ms", 0, "ignored")
	flag.Int("connect-timeout-ms", 0, "ignored")
	flag.Int("deadline-ms", 0, "ignored")
	flag.Parse()
	if *workers > 0 {
		runtime.GOMAXPROCS(*workers)
	}
	// gin logs every request, as the original did; on stderr, so that stdout
	// carries only the start line and a reader that stops after it (the
	// bench's callgrind run) never blocks the server on a full pipe.
	gin.DefaultWriter = os.Stderr

	// The original dials one fixed name; ours takes a list.
	target := strings.Split(*gcdAddrs, ",")[0]
	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		log.Fatalf("Dial failed: %v", err)
	}
	gcdClient := pb.NewGCDServiceClient(conn)

	r := gin.Default()
	r.GET("/gcd/:a/:b", func(c *gin.Context) {
		// Parse parameters
		a, err := strconv.ParseUint(c.Param("a"), 10, 64)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": "Invalid parameter A"})
			return
		}
		b, err := strconv.ParseUint(c.Param("b"), 10, 64)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": "Invalid parameter B"})
			return
		}
		// Call GCD service
		req := &pb.GCDRequest{A: a, B: b}
		if res, err := gcdClient.Compute(c, req); err == nil {
			c.JSON(http.StatusOK, gin.H{
				"result": fmt.Sprint(res.Result),
			})
		} else {
			c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		}
	})

	// r.Run(addr) is http.ListenAndServe(addr, r); listening first lets the
	// start line carry the port bound for port 0.
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("Failed to run server: %v", err)
	}
	adminAddr, err := admin.Serve(*adminListen)
	if err != nil {
		log.Fatalf("Failed to run server: %v", err)
	}
	fmt.Printf("api (original) listening addr=%s admin_addr=%s\n", lis.Addr(), adminAddr)
	// Run HTTP server
	if err := r.RunListener(lis); err != nil {
		log.Fatalf("Failed to run server: %v", err)
	}
}
