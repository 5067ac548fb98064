//! The verdict program, assembled by hand.
//!
//! It is thirteen instructions, so it is written out here rather than
//! compiled from C: the crate needs no compiler for BPF and no object-file
//! loader.
//!
//! The design rests on socket cookies, which the kernel gives every socket
//! and never reuses while the system is up. The one map is a SOCKHASH in
//! which each socket is stored under the cookie of its *peer*:
//!
//! ```text
//! key: cookie(client)  ->  value: backend socket
//! key: cookie(backend) ->  value: client socket
//! ```
//!
//! so the program only has to ask for its own socket's cookie and redirect
//! to whatever the map holds under it:
//!
//! ```c
//! int verdict(struct __sk_buff *skb)
//! {
//!     if (skb->len == 0)
//!         return SK_DROP;
//!     __u64 key = bpf_get_socket_cookie(skb);
//!     return bpf_sk_redirect_hash(skb, &peers, &key, 0);
//! }
//! ```
//!
//! Flags 0 means egress: the bytes are sent out of the peer socket as if
//! user space had written them. A FIN without data reaches the program as
//! an empty skb; redirected, the kernel's attempt to send zero bytes out of
//! the peer counts as a failure and sets `EPIPE` on the peer, so empty skbs
//! are dropped instead (the FIN itself has been processed by then; user
//! space passes it on, see `supervisor.rs`). A socket whose peer is missing from the map
//! (only while a pair is being inserted or removed, when neither side
//! sends) gets `SK_DROP` from the helper. Cookies work the same for IPv4 and
//! IPv6 sockets, and since they are never reused, a stale entry can never
//! send bytes to a newer connection.

/// One `struct bpf_insn` (include/uapi/linux/bpf.h): opcode, destination and
/// source registers as two nibbles of one byte, offset, immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcode parts (include/uapi/linux/bpf_common.h and bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_STX: u8 = 0x03;
const BPF_ALU64: u8 = 0x07;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// In the source register of a 64-bit immediate load: the immediate is a map
/// file descriptor, which the verifier replaces by the map's address.
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `SK_DROP` (`enum sk_action`), the value returned to drop an skb.
const SK_DROP: i32 = 0;
/// Offset of `len` in `struct __sk_buff`.
const SKB_LEN: i16 = 0;

// Helper function ids (`enum bpf_func_id`), part of the kernel ABI.
const FN_GET_SOCKET_COOKIE: i32 = 46;
const FN_SK_REDIRECT_HASH: i32 = 72;

// Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6
// callee-saved, r10 read-only frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R10: u8 = 10;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    // C bit-fields `dst_reg:4, src_reg:4` fill the byte from its least
    // significant bit on little-endian targets and from its most significant
    // bit on big-endian ones.
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | dst
    } else {
        (dst << 4) | src
    };
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

/// `dst = src`
const fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}

/// `dst = imm`
const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}

/// `dst += imm`
const fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}

/// `dst = *(u32 *)(src + off)`
const fn load32(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
}

/// `if dst == imm goto pc + 1 + off`
const fn jump_if_equal(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
}

/// `*(u64 *)(dst + off) = src`
const fn store64(dst: u8, off: i16, src: u8) -> Insn {
    insn(BPF_STX | BPF_MEM | BPF_DW, dst, src, off, 0)
}

/// `dst = &map` for the map behind file descriptor `fd`: two instructions.
const fn load_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

/// `r0 = helper(r1, …, r5)`
const fn call(helper: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}

/// `return r0`
const fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// Number of instructions in [`verdict`].
pub(super) const VERDICT_LEN: usize = 13;

/// The verdict program for the SOCKHASH behind `peers_fd` (see the
/// module documentation for what it does and why).
pub(super) fn verdict(peers_fd: i32) -> [Insn; VERDICT_LEN] {
    let [map_lo, map_hi] = load_map_fd(R2, peers_fd);
    [
        // if (skb->len == 0) return SK_DROP: the jump lands on the exit
        // with r0 holding the 0 it compared.
        load32(R0, R1, SKB_LEN),
        jump_if_equal(R0, SK_DROP, 10),
        // Keep the context: calls clobber r1-r5.
        mov64_reg(R6, R1),
        // r0 = bpf_get_socket_cookie(skb): this socket's cookie.
        call(FN_GET_SOCKET_COOKIE),
        // The key must be in memory: the stack slot at r10 - 8.
        store64(R10, -8, R0),
        // return bpf_sk_redirect_hash(skb, &peers, r10 - 8, 0)
        mov64_reg(R1, R6),
        map_lo,
        map_hi,
        mov64_reg(R3, R10),
        add64_imm(R3, -8),
        mov64_imm(R4, 0),
        call(FN_SK_REDIRECT_HASH),
        exit(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding, byte for byte (little-endian layout), next to the
    /// assembly it stands for.
    #[test]
    #[cfg(target_endian = "little")]
    fn the_verdict_program_encodes_as_expected() {
        let bytes: Vec<[u8; 8]> = verdict(7)
            .iter()
            .map(|i| {
                let mut b = [0u8; 8];
                b[0] = i.code;
                b[1] = i.regs;
                b[2..4].copy_from_slice(&i.off.to_le_bytes());
                b[4..8].copy_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect();
        let expected: [[u8; 8]; VERDICT_LEN] = [
            [0x61, 0x10, 0, 0, 0, 0, 0, 0],             // r0 = *(u32 *)(r1 + 0)
            [0x15, 0x00, 10, 0, 0, 0, 0, 0],            // if r0 == 0 goto +10
            [0xbf, 0x16, 0, 0, 0, 0, 0, 0],             // r6 = r1
            [0x85, 0x00, 0, 0, 46, 0, 0, 0],            // call 46
            [0x7b, 0x0a, 0xf8, 0xff, 0, 0, 0, 0],       // *(u64 *)(r10 - 8) = r0
            [0xbf, 0x61, 0, 0, 0, 0, 0, 0],             // r1 = r6
            [0x18, 0x12, 0, 0, 7, 0, 0, 0],             // r2 = map fd 7 ll
            [0, 0, 0, 0, 0, 0, 0, 0],                   //
            [0xbf, 0xa3, 0, 0, 0, 0, 0, 0],             // r3 = r10
            [0x07, 0x03, 0, 0, 0xf8, 0xff, 0xff, 0xff], // r3 += -8
            [0xb7, 0x04, 0, 0, 0, 0, 0, 0],             // r4 = 0
            [0x85, 0x00, 0, 0, 72, 0, 0, 0],            // call 72
            [0x95, 0x00, 0, 0, 0, 0, 0, 0],             // exit
        ];
        assert_eq!(bytes, expected);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
