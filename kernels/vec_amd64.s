//go:build amd64 && !noasm

#include "textflag.h"

// Element-wise kernels for softmax and GELU: e^x by Cody-Waite range
// reduction and a degree-7 Taylor polynomial, erfc by Abramowitz and
// Stegun 7.1.26, the same formulas as expf and erfcPos in gelu.go, so that
// the vector and scalar paths agree to a few ulps, and the same
// saturation: e^x is 0 below -87.3 and GELU is x or x*0 beyond |x/sqrt 2|
// > 9.1 (geluSat), so that no subnormal is computed on the way, as the
// hardware takes a slow path for them without flush-to-zero, which Go
// does not set.
//
// The AVX-512 routines take any n and finish the tail with a lane mask;
// the AVX2 routines take n a multiple of 8 and leave the tail to Go.

DATA vconst<>+0(SB)/4, $0x3fb8aa3b  // log2(e)
DATA vconst<>+4(SB)/4, $0x3f318000  // ln2, high part
DATA vconst<>+8(SB)/4, $0xb95e8083  // ln2, low part
DATA vconst<>+12(SB)/4, $0x39500d01 // 1/7!
DATA vconst<>+16(SB)/4, $0x3ab60b61 // 1/6!
DATA vconst<>+20(SB)/4, $0x3c088889 // 1/5!
DATA vconst<>+24(SB)/4, $0x3d2aaaab // 1/4!
DATA vconst<>+28(SB)/4, $0x3e2aaaab // 1/3!
DATA vconst<>+32(SB)/4, $0x3f000000 // 0.5
DATA vconst<>+36(SB)/4, $0x3f800000 // 1
DATA vconst<>+40(SB)/4, $0x40000000 // 2
DATA vconst<>+44(SB)/4, $0xc2ae999a // -87.3: e^x is 0 in float32 below
DATA vconst<>+48(SB)/4, $0x42b16666 // 88.7: e^x overflows above
DATA vconst<>+52(SB)/4, $0x3f3504f3 // 1/sqrt(2)
DATA vconst<>+56(SB)/4, $0x7fffffff // |x| mask
DATA vconst<>+60(SB)/4, $0x80000000 // sign bit
DATA vconst<>+64(SB)/4, $0x3ea7ba05 // A&S p
DATA vconst<>+68(SB)/4, $0x3f87dc22 // A&S a5
DATA vconst<>+72(SB)/4, $0xbfba00e3 // A&S a4
DATA vconst<>+76(SB)/4, $0x3fb5f0e3 // A&S a3
DATA vconst<>+80(SB)/4, $0xbe91a98e // A&S a2
DATA vconst<>+84(SB)/4, $0x3e827906 // A&S a1
DATA vconst<>+88(SB)/4, $0x0000007f // float32 exponent bias
DATA vconst<>+92(SB)/4, $0xff800000 // -Inf
DATA vconst<>+96(SB)/4, $0x4111999a // 9.1: geluSat
GLOBL vconst<>(SB), RODATA|NOPTR, $100

#define LOG2E vconst<>+0(SB)
#define LN2HI vconst<>+4(SB)
#define LN2LO vconst<>+8(SB)
#define C7 vconst<>+12(SB)
#define C6 vconst<>+16(SB)
#define C5 vconst<>+20(SB)
#define C4 vconst<>+24(SB)
#define C3 vconst<>+28(SB)
#define HALF vconst<>+32(SB)
#define ONE vconst<>+36(SB)
#define TWO vconst<>+40(SB)
#define EXPLO vconst<>+44(SB)
#define EXPHI vconst<>+48(SB)
#define RSQRT2 vconst<>+52(SB)
#define ABSMASK vconst<>+56(SB)
#define SIGNBIT vconst<>+60(SB)
#define ASP vconst<>+64(SB)
#define ASA5 vconst<>+68(SB)
#define ASA4 vconst<>+72(SB)
#define ASA3 vconst<>+76(SB)
#define ASA2 vconst<>+80(SB)
#define ASA1 vconst<>+84(SB)
#define EXPBIAS vconst<>+88(SB)
#define NEGINF vconst<>+92(SB)
#define GELUSAT vconst<>+96(SB)

// EXP512 sets X = e^X; N and T are scratch.
#define EXP512(X, N, T) \
	VMAXPS.BCST EXPLO, X, X; \
	VMINPS.BCST EXPHI, X, X; \
	VMULPS.BCST LOG2E, X, N; \
	VRNDSCALEPS $0, N, N; \
	VFNMADD231PS.BCST LN2HI, N, X; \
	VFNMADD231PS.BCST LN2LO, N, X; \
	VBROADCASTSS C7, T; \
	VFMADD213PS.BCST C6, X, T; \
	VFMADD213PS.BCST C5, X, T; \
	VFMADD213PS.BCST C4, X, T; \
	VFMADD213PS.BCST C3, X, T; \
	VFMADD213PS.BCST HALF, X, T; \
	VFMADD213PS.BCST ONE, X, T; \
	VFMADD213PS.BCST ONE, X, T; \
	VSCALEFPS N, T, X

// GELU512 sets Z0 = gelu(Z0) with Z1-Z9 and K2, K3 scratch, Z10 zero and
// Z11 geluSat. Lanes beyond geluSat (K3) compute erfc at geluSat, where it
// is still a normal float, then replace the term x/2*erfc by min(x, 0)*0:
// +0 above, so that the result is x - 0 = x (+Inf too, which x/2*erfc
// would make NaN), and x*0 below (-0; NaN for -Inf, as GELURef). NaN fails
// the compare and, geluSat being VMINPS's first source, passes the clamp,
// so that it takes the same course, and payload, as without it.
#define GELU512 \
	VMULPS.BCST RSQRT2, Z0, Z1; \
	VPANDD.BCST ABSMASK, Z1, Z2; \
	VCMPPS $0x1e, Z11, Z2, K3; \
	VMINPS Z2, Z11, Z2; \
	VBROADCASTSS ASP, Z3; \
	VFMADD213PS.BCST ONE, Z2, Z3; \
	VRCP14PS Z3, Z4; \
	VFNMADD213PS.BCST TWO, Z4, Z3; \
	VMULPS Z3, Z4, Z4; \
	VBROADCASTSS ASA5, Z5; \
	VFMADD213PS.BCST ASA4, Z4, Z5; \
	VFMADD213PS.BCST ASA3, Z4, Z5; \
	VFMADD213PS.BCST ASA2, Z4, Z5; \
	VFMADD213PS.BCST ASA1, Z4, Z5; \
	VMULPS Z4, Z5, Z5; \
	VMULPS Z2, Z2, Z6; \
	VPXORD.BCST SIGNBIT, Z6, Z6; \
	EXP512(Z6, Z7, Z8); \
	VMULPS Z6, Z5, Z5; \
	VMULPS.BCST HALF, Z0, Z9; \
	VMULPS Z9, Z5, Z5; \
	VMINPS Z10, Z0, K3, Z5; \
	VMULPS Z10, Z5, K3, Z5; \
	VCMPPS $13, Z10, Z1, K2; \
	VSUBPS Z5, Z0, K2, Z5; \
	VMOVAPS Z5, Z0

// TAILMASK sets K1 to the low CX bits (CX < 16).
#define TAILMASK \
	MOVL $1, AX; \
	SHLL CX, AX; \
	DECL AX; \
	KMOVW AX, K1

// func maxAVX512(x *float32, n int) float32
TEXT ·maxAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS NEGINF, Z0
	VMOVAPS Z0, Z1
max512loop2:
	CMPQ CX, $32
	JLT max512loop1
	VMAXPS (SI), Z0, Z0
	VMAXPS 64(SI), Z1, Z1
	ADDQ $128, SI
	SUBQ $32, CX
	JMP max512loop2
max512loop1:
	CMPQ CX, $16
	JLT max512tail
	VMAXPS (SI), Z0, Z0
	ADDQ $64, SI
	SUBQ $16, CX
max512tail:
	TESTQ CX, CX
	JZ max512reduce
	TAILMASK
	VMAXPS (SI), Z1, K1, Z1
max512reduce:
	VMAXPS Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	MOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func expSumAVX512(x *float32, n int, scale, shift float32) float32
// EXP512 clamps its argument to -87.3, where e^x is still normal; the lanes
// below (K2 clear: not NaN, which keeps the clamped value) are set to 0,
// as expf does, rather than left at 1.2e-38 for the softmax's scaling to
// turn subnormal.
TEXT ·expSumAVX512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS scale+16(FP), Z20
	VBROADCASTSS shift+20(FP), Z21
	VPXORD Z22, Z22, Z22
expsum512loop:
	CMPQ CX, $16
	JLT expsum512tail
	VMOVUPS (SI), Z0
	VFMSUB213PS Z21, Z20, Z0
	VCMPPS.BCST $0x15, EXPLO, Z0, K2
	EXP512(Z0, Z1, Z2)
	VMOVAPS.Z Z0, K2, Z0
	VMOVUPS Z0, (SI)
	VADDPS Z0, Z22, Z22
	ADDQ $64, SI
	SUBQ $16, CX
	JMP expsum512loop
expsum512tail:
	TESTQ CX, CX
	JZ expsum512reduce
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VFMSUB213PS Z21, Z20, Z0
	VCMPPS.BCST $0x15, EXPLO, Z0, K2
	EXP512(Z0, Z1, Z2)
	VMOVAPS.Z Z0, K2, Z0
	VMOVUPS Z0, K1, (SI)
	VADDPS Z0, Z22, K1, Z22
expsum512reduce:
	VEXTRACTF64X4 $1, Z22, Y1
	VADDPS Y1, Y22, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VADDPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VADDPS X1, X0, X0
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func scaleAVX512(x *float32, n int, s float32)
TEXT ·scaleAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Z20
scale512loop:
	CMPQ CX, $16
	JLT scale512tail
	VMULPS (SI), Z20, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	SUBQ $16, CX
	JMP scale512loop
scale512tail:
	TESTQ CX, CX
	JZ scale512done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMULPS Z0, Z20, Z0
	VMOVUPS Z0, K1, (SI)
scale512done:
	VZEROUPPER
	RET

// func addAVX512(x, y *float32, n int)
TEXT ·addAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
add512loop:
	CMPQ CX, $16
	JLT add512tail
	VMOVUPS (SI), Z0
	VADDPS (DI), Z0, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP add512loop
add512tail:
	TESTQ CX, CX
	JZ add512done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z (DI), K1, Z1
	VADDPS Z1, Z0, Z0
	VMOVUPS Z0, K1, (SI)
add512done:
	VZEROUPPER
	RET

// func geluAVX512(x, bias *float32, n int)
// x = gelu(x + bias); bias may be nil.
TEXT ·geluAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ bias+8(FP), DI
	MOVQ n+16(FP), CX
	VPXORD Z10, Z10, Z10
	VBROADCASTSS GELUSAT, Z11
gelu512loop:
	CMPQ CX, $16
	JLT gelu512tail
	VMOVUPS (SI), Z0
	TESTQ DI, DI
	JZ gelu512nobias
	VADDPS (DI), Z0, Z0
	ADDQ $64, DI
gelu512nobias:
	GELU512
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	SUBQ $16, CX
	JMP gelu512loop
gelu512tail:
	TESTQ CX, CX
	JZ gelu512done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	TESTQ DI, DI
	JZ gelu512tailnobias
	VMOVUPS.Z (DI), K1, Z1
	VADDPS Z1, Z0, Z0
gelu512tailnobias:
	GELU512
	VMOVUPS Z0, K1, (SI)
gelu512done:
	VZEROUPPER
	RET

// EXP256 sets X = e^X; N and T are scratch. 2^n is built in the exponent
// bits, as AVX2 has no VSCALEFPS.
#define EXP256(X, N, T) \
	VBROADCASTSS EXPLO, T; \
	VMAXPS T, X, X; \
	VBROADCASTSS EXPHI, T; \
	VMINPS T, X, X; \
	VBROADCASTSS LOG2E, T; \
	VMULPS T, X, N; \
	VROUNDPS $0, N, N; \
	VBROADCASTSS LN2HI, T; \
	VFNMADD231PS T, N, X; \
	VBROADCASTSS LN2LO, T; \
	VFNMADD231PS T, N, X; \
	VCVTPS2DQ N, N; \
	VPBROADCASTD EXPBIAS, T; \
	VPADDD T, N, N; \
	VPSLLD $23, N, N; \
	VBROADCASTSS C7, T; \
	VBROADCASTSS C6, Y15; \
	VFMADD213PS Y15, X, T; \
	VBROADCASTSS C5, Y15; \
	VFMADD213PS Y15, X, T; \
	VBROADCASTSS C4, Y15; \
	VFMADD213PS Y15, X, T; \
	VBROADCASTSS C3, Y15; \
	VFMADD213PS Y15, X, T; \
	VBROADCASTSS HALF, Y15; \
	VFMADD213PS Y15, X, T; \
	VBROADCASTSS ONE, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X, T; \
	VMULPS N, T, X

// EXP256X2 is EXP256 on two vectors at once, X and X2 (N, T, N2, T2
// scratch), their instructions interleaved: one e^x is a chain of some 20
// dependent steps, longer than the scheduler can overlap across loop
// iterations on its own, so a second independent chain fills its waits.
#define EXP256X2(X, N, T, X2, N2, T2) \
	VBROADCASTSS EXPLO, T; \
	VMAXPS T, X, X; \
	VMAXPS T, X2, X2; \
	VBROADCASTSS EXPHI, T; \
	VMINPS T, X, X; \
	VMINPS T, X2, X2; \
	VBROADCASTSS LOG2E, T; \
	VMULPS T, X, N; \
	VMULPS T, X2, N2; \
	VROUNDPS $0, N, N; \
	VROUNDPS $0, N2, N2; \
	VBROADCASTSS LN2HI, T; \
	VFNMADD231PS T, N, X; \
	VFNMADD231PS T, N2, X2; \
	VBROADCASTSS LN2LO, T; \
	VFNMADD231PS T, N, X; \
	VFNMADD231PS T, N2, X2; \
	VCVTPS2DQ N, N; \
	VCVTPS2DQ N2, N2; \
	VPBROADCASTD EXPBIAS, T; \
	VPADDD T, N, N; \
	VPADDD T, N2, N2; \
	VPSLLD $23, N, N; \
	VPSLLD $23, N2, N2; \
	VBROADCASTSS C7, T; \
	VMOVAPS T, T2; \
	VBROADCASTSS C6, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VBROADCASTSS C5, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VBROADCASTSS C4, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VBROADCASTSS C3, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VBROADCASTSS HALF, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VBROADCASTSS ONE, Y15; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VFMADD213PS Y15, X, T; \
	VFMADD213PS Y15, X2, T2; \
	VMULPS N, T, X; \
	VMULPS N2, T2, X2

// func maxAVX2(x *float32, n int) float32
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS NEGINF, Y0
	VMOVAPS Y0, Y1
	SHRQ $3, CX
	JZ max256reduce
max256loop:
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ max256loop
max256reduce:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	MOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func expSumAVX2(x *float32, n int, scale, shift float32) float32
// Lanes below -87.3 are set to 0, as in expSumAVX512.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS scale+16(FP), Y10
	VBROADCASTSS shift+20(FP), Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	SHRQ $3, CX
	JZ expsum256reduce
	// Two vectors an iteration (EXP256X2), then the odd one.
	SHRQ $1, CX
	JZ expsum256one
expsum256loop2:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y4
	VFMSUB213PS Y11, Y10, Y0
	VFMSUB213PS Y11, Y10, Y4
	VBROADCASTSS EXPLO, Y3
	VCMPPS $0x15, Y3, Y0, Y7
	VCMPPS $0x15, Y3, Y4, Y3
	EXP256X2(Y0, Y1, Y2, Y4, Y5, Y6)
	VANDPS Y7, Y0, Y0
	VANDPS Y3, Y4, Y4
	VMOVUPS Y0, (SI)
	VMOVUPS Y4, 32(SI)
	VADDPS Y0, Y12, Y12
	VADDPS Y4, Y13, Y13
	ADDQ $64, SI
	DECQ CX
	JNZ expsum256loop2
expsum256one:
	VADDPS Y13, Y12, Y12
	MOVQ n+8(FP), CX
	ANDQ $8, CX
	JZ expsum256reduce
	MOVQ $1, CX
expsum256loop:
	VMOVUPS (SI), Y0
	VFMSUB213PS Y11, Y10, Y0
	VBROADCASTSS EXPLO, Y3
	VCMPPS $0x15, Y3, Y0, Y3
	EXP256(Y0, Y1, Y2)
	VANDPS Y3, Y0, Y0
	VMOVUPS Y0, (SI)
	VADDPS Y0, Y12, Y12
	ADDQ $32, SI
	DECQ CX
	JNZ expsum256loop
expsum256reduce:
	VEXTRACTF128 $1, Y12, X1
	VADDPS X1, X12, X0
	VPERMILPS $0x4e, X0, X1
	VADDPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VADDPS X1, X0, X0
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func scaleAVX2(x *float32, n int, s float32)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Y10
	SHRQ $3, CX
	JZ scale256done
scale256loop:
	VMULPS (SI), Y10, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	DECQ CX
	JNZ scale256loop
scale256done:
	VZEROUPPER
	RET

// func addAVX2(x, y *float32, n int)
TEXT ·addAVX2(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ add256done
add256loop:
	VMOVUPS (SI), Y0
	VADDPS (DI), Y0, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ add256loop
add256done:
	VZEROUPPER
	RET

// func geluAVX2(x, bias *float32, n int)
// GELU512's saturation, with Y13 geluSat and Y11 the mask of the lanes
// beyond it.
TEXT ·geluAVX2(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ bias+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y10, Y10, Y10
	VBROADCASTSS GELUSAT, Y13
	SHRQ $3, CX
	JZ gelu256done
gelu256loop:
	VMOVUPS (SI), Y0
	TESTQ DI, DI
	JZ gelu256nobias
	VADDPS (DI), Y0, Y0
	ADDQ $32, DI
gelu256nobias:
	VBROADCASTSS RSQRT2, Y8
	VMULPS Y8, Y0, Y1
	VBROADCASTSS ABSMASK, Y8
	VANDPS Y8, Y1, Y2
	VCMPPS $0x1e, Y13, Y2, Y11
	VMINPS Y2, Y13, Y2
	VBROADCASTSS ASP, Y3
	VBROADCASTSS ONE, Y8
	VFMADD213PS Y8, Y2, Y3
	VRCPPS Y3, Y4
	VBROADCASTSS TWO, Y8
	VFNMADD213PS Y8, Y4, Y3
	VMULPS Y3, Y4, Y4
	VBROADCASTSS ASA5, Y5
	VBROADCASTSS ASA4, Y8
	VFMADD213PS Y8, Y4, Y5
	VBROADCASTSS ASA3, Y8
	VFMADD213PS Y8, Y4, Y5
	VBROADCASTSS ASA2, Y8
	VFMADD213PS Y8, Y4, Y5
	VBROADCASTSS ASA1, Y8
	VFMADD213PS Y8, Y4, Y5
	VMULPS Y4, Y5, Y5
	VMULPS Y2, Y2, Y6
	VBROADCASTSS SIGNBIT, Y8
	VXORPS Y8, Y6, Y6
	EXP256(Y6, Y7, Y8)
	VMULPS Y6, Y5, Y5
	VBROADCASTSS HALF, Y8
	VMULPS Y8, Y0, Y9
	VMULPS Y9, Y5, Y5
	VMINPS Y10, Y0, Y12
	VMULPS Y10, Y12, Y12
	VBLENDVPS Y11, Y12, Y5, Y5
	VSUBPS Y5, Y0, Y9
	VCMPPS $13, Y10, Y1, Y8
	VBLENDVPS Y8, Y9, Y5, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	DECQ CX
	JNZ gelu256loop
gelu256done:
	VZEROUPPER
	RET

// HSUM512 sums the lanes of Z0 into X0 (Z1 scratch).
#define HSUM512 \
	VEXTRACTF64X4 $1, Z0, Y1; \
	VADDPS Y1, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VPERMILPS $0x4e, X0, X1; \
	VADDPS X1, X0, X0; \
	VPERMILPS $0xb1, X0, X1; \
	VADDPS X1, X0, X0

// func sumAVX512(x *float32, n int) float32
TEXT ·sumAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z2, Z2, Z2
sum512loop2:
	CMPQ CX, $32
	JLT sum512loop1
	VADDPS (SI), Z0, Z0
	VADDPS 64(SI), Z2, Z2
	ADDQ $128, SI
	SUBQ $32, CX
	JMP sum512loop2
sum512loop1:
	CMPQ CX, $16
	JLT sum512tail
	VADDPS (SI), Z0, Z0
	ADDQ $64, SI
	SUBQ $16, CX
sum512tail:
	TESTQ CX, CX
	JZ sum512reduce
	TAILMASK
	VMOVUPS.Z (SI), K1, Z3
	VADDPS Z3, Z2, Z2
sum512reduce:
	VADDPS Z2, Z0, Z0
	HSUM512
	MOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func sqDevAVX512(x *float32, n int, mean float32) float32
// Sum of (x[i]-mean)^2.
TEXT ·sqDevAVX512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS mean+16(FP), Z4
	VPXORD Z0, Z0, Z0
	VPXORD Z2, Z2, Z2
sqdev512loop2:
	CMPQ CX, $32
	JLT sqdev512loop1
	VSUBPS (SI), Z4, Z5
	VFMADD231PS Z5, Z5, Z0
	VSUBPS 64(SI), Z4, Z6
	VFMADD231PS Z6, Z6, Z2
	ADDQ $128, SI
	SUBQ $32, CX
	JMP sqdev512loop2
sqdev512loop1:
	CMPQ CX, $16
	JLT sqdev512tail
	VSUBPS (SI), Z4, Z5
	VFMADD231PS Z5, Z5, Z0
	ADDQ $64, SI
	SUBQ $16, CX
sqdev512tail:
	TESTQ CX, CX
	JZ sqdev512reduce
	TAILMASK
	VMOVUPS.Z (SI), K1, Z3
	VSUBPS Z3, Z4, K1, Z5
	VMULPS Z5, Z5, K1, Z5
	VADDPS Z5, Z2, K1, Z2
sqdev512reduce:
	VADDPS Z2, Z0, Z0
	HSUM512
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func normAVX512(x, gamma, beta *float32, n int, mean, inv float32)
// x = (x - mean) * inv * gamma + beta.
TEXT ·normAVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ gamma+8(FP), DI
	MOVQ beta+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mean+32(FP), Z4
	VBROADCASTSS inv+36(FP), Z7
norm512loop:
	CMPQ CX, $16
	JLT norm512tail
	VMOVUPS (SI), Z0
	VSUBPS Z4, Z0, Z0
	VMULPS Z7, Z0, Z0
	VMULPS (DI), Z0, Z0
	VADDPS (DX), Z0, Z0
	VMOVUPS Z0, (SI)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, DX
	SUBQ $16, CX
	JMP norm512loop
norm512tail:
	TESTQ CX, CX
	JZ norm512done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z (DI), K1, Z1
	VMOVUPS.Z (DX), K1, Z2
	VSUBPS Z4, Z0, Z0
	VMULPS Z7, Z0, Z0
	VMULPS Z1, Z0, Z0
	VADDPS Z2, Z0, Z0
	VMOVUPS Z0, K1, (SI)
norm512done:
	VZEROUPPER
	RET

// HSUM256 sums the lanes of Y0 into X0 (X1 scratch).
#define HSUM256 \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VPERMILPS $0x4e, X0, X1; \
	VADDPS X1, X0, X0; \
	VPERMILPS $0xb1, X0, X1; \
	VADDPS X1, X0, X0

// func sumAVX2(x *float32, n int) float32
TEXT ·sumAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPS Y0, Y0, Y0
	SHRQ $3, CX
	JZ sum256reduce
sum256loop:
	VADDPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ sum256loop
sum256reduce:
	HSUM256
	MOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func sqDevAVX2(x *float32, n int, mean float32) float32
TEXT ·sqDevAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS mean+16(FP), Y4
	VXORPS Y0, Y0, Y0
	SHRQ $3, CX
	JZ sqdev256reduce
sqdev256loop:
	VMOVUPS (SI), Y5
	VSUBPS Y4, Y5, Y5
	VFMADD231PS Y5, Y5, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ sqdev256loop
sqdev256reduce:
	HSUM256
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func normAVX2(x, gamma, beta *float32, n int, mean, inv float32)
TEXT ·normAVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ gamma+8(FP), DI
	MOVQ beta+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS mean+32(FP), Y4
	VBROADCASTSS inv+36(FP), Y7
	SHRQ $3, CX
	JZ norm256done
norm256loop:
	VMOVUPS (SI), Y0
	VSUBPS Y4, Y0, Y0
	VMULPS Y7, Y0, Y0
	VMULPS (DI), Y0, Y0
	VADDPS (DX), Y0, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, DX
	DECQ CX
	JNZ norm256loop
norm256done:
	VZEROUPPER
	RET
