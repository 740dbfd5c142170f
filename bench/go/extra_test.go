// Benchmarks ctxkit adds to Go's own src/context/benchmark_test.go, written
// for Go so that bench/compare.sh has a Go figure for every row.
package ctxkitbench

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkChildCreateCancel derives a child of a live cancellable parent
// and cancels it, on one goroutine.
func BenchmarkChildCreateCancel(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < b.N; i++ {
		_, cancelChild := context.WithCancel(parent)
		cancelChild()
	}
}

// BenchmarkMoveDeadline is ctxkit's "move a deadline" row, the Go way:
// Go's deadlines cannot move, so each of the ten moves per operation
// cancels the context and derives a new one-hour timeout from the same
// parent, on every goroutine, with 4,000 other timeouts pending.
func BenchmarkMoveDeadline(b *testing.B) {
	b.Run("concurrency=4000", func(b *testing.B) {
		root := context.Background()
		for i := 0; i < 4000; i++ {
			var cancel context.CancelFunc
			_, cancel = context.WithTimeout(root, time.Hour)
			defer cancel()
		}
		b.RunParallel(func(pb *testing.PB) {
			_, cancel := context.WithTimeout(root, time.Hour)
			for pb.Next() {
				for j := 0; j < 10; j++ {
					cancel()
					_, cancel = context.WithTimeout(root, time.Hour+time.Duration(j%2)*time.Second)
				}
			}
			cancel()
		})
	})
}

// BenchmarkMerge is the glue Go code writes for a context ended by either
// of two parents, then cancelled: a child of one, and a goroutine that
// cancels it when the other ends (Go 1.19 has no AfterFunc; with it, the
// goroutine becomes a callback registration).
func BenchmarkMerge(b *testing.B) {
	first, cancelFirst := context.WithCancel(context.Background())
	defer cancelFirst()
	second, cancelSecond := context.WithCancel(context.Background())
	defer cancelSecond()
	for i := 0; i < b.N; i++ {
		merged, cancel := context.WithCancel(first)
		go func() {
			select {
			case <-second.Done():
				cancel()
			case <-merged.Done():
			}
		}()
		cancel()
	}
}

// BenchmarkMergeBackground: a merge with Background is a WithCancel.
func BenchmarkMergeBackground(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < b.N; i++ {
		_, cancelChild := context.WithCancel(parent)
		cancelChild()
	}
}

const fanOutTasks = 10000

// BenchmarkFanOutWake starts 10,000 goroutines blocked on one context's
// Done channel and reports, as ns/fanout, the time from cancel() until the
// last of them has run.
func BenchmarkFanOutWake(b *testing.B) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += fanOut()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/fanout")
}

func fanOut() time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var registered, woken int64
	allRegistered := make(chan struct{})
	lastWoken := make(chan time.Time, 1)
	for j := 0; j < fanOutTasks; j++ {
		go func() {
			done := ctx.Done()
			if atomic.AddInt64(&registered, 1) == fanOutTasks {
				close(allRegistered)
			}
			<-done
			if atomic.AddInt64(&woken, 1) == fanOutTasks {
				lastWoken <- time.Now()
			}
		}()
	}
	<-allRegistered
	start := time.Now()
	cancel()
	return (<-lastWoken).Sub(start)
}

// BenchmarkBytesPerLiveChild reports, as B/child, the live heap that each of
// 100,000 children of one parent holds (the child, its cancel function and
// its entry in the parent), measured after a GC as ctxkit's bench measures
// its net allocation.
func BenchmarkBytesPerLiveChild(b *testing.B) {
	const children = 100000
	var perChild float64
	for i := 0; i < b.N; i++ {
		perChild = bytesPerLiveChild(children)
	}
	b.ReportMetric(perChild, "B/child")
}

type child struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func bytesPerLiveChild(n int) float64 {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	kept := make([]child, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range kept {
		kept[i].ctx, kept[i].cancel = context.WithCancel(parent)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}
