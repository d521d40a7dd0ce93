// Command genbf16 writes gemm_bf16_amd64.s, the AVX512_BF16 SGEMM
// micro-kernels and the float32 to bfloat16 conversion of their
// activations. Go's assembler does not know the AVX512_BF16 instructions,
// so VDPBF16PS is emitted as its EVEX encoding in BYTE directives;
// everything else is ordinary Go assembly.
//
// Run from kernels/: go generate (see gemm_bf16.go).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
)

// vdpbf16ps encodes VDPBF16PS zmm(dst), zmm(src2), zmm(src3): for each of
// 16 float32 lanes, dst += src2.bf16[0]*src3.bf16[0] +
// src2.bf16[1]*src3.bf16[1]. EVEX.512.F3.0F38.W0 52 /r.
func vdpbf16ps(dst, src2, src3 int) []byte {
	inv := func(v, bit int) byte { return byte(^(v >> bit) & 1) }
	p0 := inv(dst, 3)<<7 | inv(src3, 4)<<6 | inv(src3, 3)<<5 | inv(dst, 4)<<4 | 0b10 // map 0F38
	p1 := byte(0)<<7 | byte(^src2&0xF)<<3 | 1<<2 | 0b10                              // W0, pp F3
	p2 := byte(0b10)<<5 | inv(src2, 4)<<3                                            // L'L 512, no broadcast, no mask
	modrm := byte(0b11)<<6 | byte(dst&7)<<3 | byte(src3&7)
	return []byte{0x62, p0, p1, p2, 0x52, modrm}
}

func dp(w *bytes.Buffer, dst, src2, src3 int) {
	fmt.Fprintf(w, "\t")
	for i, b := range vdpbf16ps(dst, src2, src3) {
		if i > 0 {
			fmt.Fprintf(w, "; ")
		}
		fmt.Fprintf(w, "BYTE $0x%02x", b)
	}
	fmt.Fprintf(w, "; \\\n")
}

// rowAddr is where row r's current pair is: rows 0-5 from SI, rows 6-11
// from R14 (six rows further on), with R11 = lda, R12 = 3*lda and R13 =
// 5*lda in bytes, so that no row needs a register of its own.
func rowAddr(r int) string {
	base := "SI"
	if r >= 6 {
		base, r = "R14", r-6
	}
	return fmt.Sprintf([...]string{"(%s)", "(%s)(R11*1)", "(%s)(R11*2)", "(%s)(R12*1)", "(%s)(R11*4)", "(%s)(R13*1)"}[r], base)
}

// direct writes sgemmBF16Direct<rows>: the rows x 32 tile from rows of
// BF16 pairs read in place (row stride lda words) and a panel of B.
func direct(w *bytes.Buffer, rows int) {
	name := fmt.Sprintf("sgemmBF16Direct%d", rows)
	step := fmt.Sprintf("STEPBF16D%d", rows)
	fmt.Fprintf(w, `// One k-pair step of the %d x 32 kernel: Z24 and Z25 hold the pairs of 32
// columns of B, each row's pair of A is broadcast in turn, and VDPBF16PS
// adds both products into the row's float32 accumulators.
#define %s \
	VMOVUPS (DI), Z24; \
	VMOVUPS 64(DI), Z25; \
`, rows, step)
	for r := 0; r < rows; r++ {
		a := 26 + r%4
		fmt.Fprintf(w, "\tVPBROADCASTD %s, Z%d; \\\n", rowAddr(r), a)
		dp(w, 2*r, 24, a)
		dp(w, 2*r+1, 25, a)
	}
	fmt.Fprint(w, "\tADDQ $4, SI; \\\n")
	if rows > 6 {
		fmt.Fprint(w, "\tADDQ $4, R14; \\\n")
	}
	fmt.Fprint(w, "\tADDQ $128, DI\n\n")
	fmt.Fprintf(w, `// func %s(k int, a *float32, lda int, b, c *float32, ldc int, add bool, pf *float32)
TEXT ·%s(SB), NOSPLIT, $0-64
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R11
	SHLQ $2, R11
	LEAQ (R11)(R11*2), R12
	LEAQ (R11)(R11*4), R13
	LEAQ (SI)(R12*2), R14
	MOVQ b+24(FP), DI
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	MOVQ pf+56(FP), R9
`, name, name)
	for r := 0; r < 2*rows; r++ {
		fmt.Fprintf(w, "\tVPXORD Z%d, Z%d, Z%d\n", r, r, r)
	}
	// The tile's lines of C are fetched while the products run, not
	// missed at the stores: a layer's output is rarely in any cache.
	fmt.Fprintf(w, `	MOVQ DX, R10
	MOVL $%d, AX
bf16d%[1]dfetch:
	PREFETCHT0 (R10)
	PREFETCHT0 64(R10)
	ADDQ R8, R10
	DECL AX
	JNZ bf16d%[1]dfetch
`, rows)
	l := func(s string) string { return fmt.Sprintf("bf16d%d%s", rows, s) }
	fmt.Fprintf(w, `	MOVQ CX, BX
	SHRQ $2, BX
	JZ %[1]s
%[2]s:
	PREFETCHT1 (R9)
	PREFETCHT1 64(R9)
	PREFETCHT1 128(R9)
	PREFETCHT1 192(R9)
	ADDQ $256, R9
	%[5]s
	%[5]s
	%[5]s
	%[5]s
	DECQ BX
	JNZ %[2]s
%[1]s:
	ANDQ $3, CX
	JZ %[3]s
%[4]s:
	%[5]s
	DECQ CX
	JNZ %[4]s
%[3]s:
	CMPB add+48(FP), $0
	JEQ %[6]s
`, l("tail"), l("loop4"), l("store"), l("loop1"), step, l("set"))
	for r := 0; r < rows; r++ {
		if r > 0 {
			fmt.Fprint(w, "\tADDQ R8, DX\n")
		}
		fmt.Fprintf(w, "\tVADDPS (DX), Z%d, Z%d\n\tVADDPS 64(DX), Z%d, Z%d\n", 2*r, 2*r, 2*r+1, 2*r+1)
		fmt.Fprintf(w, "\tVMOVUPS Z%d, (DX)\n\tVMOVUPS Z%d, 64(DX)\n", 2*r, 2*r+1)
	}
	fmt.Fprintf(w, "\tVZEROUPPER\n\tRET\n%s:\n", l("set"))
	for r := 0; r < rows; r++ {
		if r > 0 {
			fmt.Fprint(w, "\tADDQ R8, DX\n")
		}
		fmt.Fprintf(w, "\tVMOVUPS Z%d, (DX)\n\tVMOVUPS Z%d, 64(DX)\n", 2*r, 2*r+1)
	}
	fmt.Fprint(w, "\tVZEROUPPER\n\tRET\n\n")
}

// The conversions are f32ToBF16 on 16 lanes at a time, integer arithmetic
// on the bits as the Go code does (VCVTNE2PS2BF16 would flush subnormals to
// zero and differ from the portable path): each value is rounded to
// nearest even by adding 0x7fff and the kept LSB to its bits; a NaN keeps
// its top bits and gets the quiet bit instead. Z28-Z30 hold the constants
// (consts), K1 is scratch.

const consts = `	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z30
	MOVL $1, AX
	VPBROADCASTD AX, Z29
	MOVL $0x40, AX
	VPBROADCASTD AX, Z28
`

// round returns the code that sets Z(out) to the BF16 bits of the floats in
// Z(in), in the low half of each lane; Z(in+1) and Z(in+2) are scratch.
func round(in, out int) string {
	return fmt.Sprintf(`	VPSRLD $16, Z%[1]d, Z%[2]d
	VPANDD Z29, Z%[2]d, Z%[3]d
	VPADDD Z30, Z%[1]d, Z%[4]d
	VPADDD Z%[3]d, Z%[4]d, Z%[4]d
	VPSRLD $16, Z%[4]d, Z%[4]d
	VCMPPS $3, Z%[1]d, Z%[1]d, K1
	VPORD Z28, Z%[2]d, K1, Z%[4]d
`, in, in+1, in+2, out)
}

// convert returns the routine that rounds n floats from src (a positive
// multiple of 16) into BF16 halves at dst; load is the instruction that
// brings 16 of them into Z0 from (SI), after setup.
func convert(doc, name, frame, setup, load, label string) string {
	return fmt.Sprintf(`%s
TEXT ·%s(SB), NOSPLIT, %s
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
%s	SHRQ $4, CX
%s%s:
	%s
%s	VPMOVDW Z3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	DECQ CX
	JNZ %s
	VZEROUPPER
	RET

`, doc, name, frame, setup, consts, label, load, round(0, 3), label)
}

// conversions writes toBF16AVX512, toBF16ScaledAVX512 and pairBF16AVX512.
func conversions(w io.Writer) {
	fmt.Fprint(w, convert(`// func toBF16AVX512(dst *uint16, src *float32, n int)
// n is a positive multiple of 16. Each value is rounded to nearest even by
// adding 0x7fff and the kept LSB to its bits; a NaN keeps its top bits and
// gets the quiet bit instead (see f32ToBF16).`, "toBF16AVX512", "$0-24", "", "VMOVUPS (SI), Z0", "tobf16loop"))
	fmt.Fprint(w, convert(`// func toBF16ScaledAVX512(dst *uint16, src *float32, n int, s float32)
// toBF16AVX512 of src[j]*s, the float32 product rounded: a softmax's last
// pass (the division by the sum) and its conversion in one.`, "toBF16ScaledAVX512", "$0-28",
		"\tVBROADCASTSS s+24(FP), Z31\n", "VMULPS (SI), Z31, Z0", "tobf16sloop"))
	fmt.Fprintf(w, `// func pairBF16AVX512(dst *uint32, lo, hi *float32, n int)
// dst[j] = the BF16 pair (lo[j], hi[j]): lo[j] rounded as toBF16AVX512
// rounds in the low half, hi[j] in the high half. Two rows of values
// become one row of a panel whose pairs run across them (attention's
// values, paired along the tokens). n is a positive multiple of 16.
TEXT ·pairBF16AVX512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ lo+8(FP), SI
	MOVQ hi+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $4, CX
%spairbf16loop:
	VMOVUPS (SI), Z0
%s	VMOVUPS (DX), Z4
%s	VPSLLD $16, Z7, Z7
	VPORD Z7, Z3, Z3
	VMOVDQU32 Z3, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, DI
	DECQ CX
	JNZ pairbf16loop
	VZEROUPPER
	RET
`, consts, round(0, 3), round(4, 7))
}

func main() {
	out := flag.String("o", "gemm_bf16_amd64.s", "file to write")
	flag.Parse()
	var w bytes.Buffer
	fmt.Fprint(&w, `// Code generated by internal/genbf16; DO NOT EDIT.

//go:build amd64 && !noasm

#include "textflag.h"

// The BF16 micro-kernels read A in place: rows of BF16 values, each 32-bit
// word the pair (2p, 2p+1) of a row, so that one VPBROADCASTD gives a row's
// pair to every lane. B is packed by packBBF16: per pair, the words of 32
// columns. k counts pairs. pf is where the next panel of B is: one line of
// it is asked into L2 per k step.

`)
	for _, rows := range []int{12, 8, 4, 2, 1} {
		direct(&w, rows)
	}
	conversions(&w)
	if err := os.WriteFile(*out, w.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
