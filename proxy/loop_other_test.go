//go:build !linux

package proxy

// There is no event loop here: the TryInterceptor run of the seams test
// uses the goroutine relay too.
func tryInterceptorFor(ti *testInterceptor) Interceptor { return ti }
