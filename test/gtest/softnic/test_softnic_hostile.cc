/*
 * softnic under hostile wire input: a raw TCP client (peer A, on the other
 * host in two_hosts) sends short, garbage, oversized and lying frames to the
 * softnic listener of peer B. B must stay alive, never write outside its
 * registered region, and keep serving legitimate QPs.
 */
#ifdef HAVE_CONFIG_H
#include "orc_config.h"
#endif

#include "softnic_harness.h"

#include <iostream>
#include <string>

using namespace softnic_test;

namespace
{

const size_t LEN = 65536;

class softnic_hostile : public softnic_topo
{
  protected:
    void SetUp() override
    {
        softnic_topo::SetUp();
        if (IsSkipped() || HasFatalFailure())
            return;
        m_a = &spawn('a');
        m_b = &spawn('b');
        ASSERT_FALSE(HasFailure());
        m_la = reg_mr(*m_a, 1, LEN);
        m_rb = reg_mr(*m_b, 1, LEN, "LW,RW,RR,RA", 65536);
        ASSERT_FALSE(HasFailure());
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, 0, *m_b, 0));
        ASSERT_OK(m_b->cmd("fill id=1 off=4096 len=61440 seed=20"));
        ASSERT_OK(m_a->cmd("fill id=1 len=4096 seed=21"));
        wc_t wc =
            post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=1" + remote());
        ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    }

    std::string remote(uint64_t off = 0) const
    {
        return m_rb.remote(off);
    }

    /* The TCP listeners of B's process ("ip:port"). */
    std::vector<std::string> listeners()
    {
        std::vector<std::string> out;
        reply_t r = m_b->cmd("listeners");
        EXPECT_TRUE(r.ok) << r.line;
        for (unsigned i = 0; i < r.u("count"); ++i) {
            out.push_back(r.s(("l" + std::to_string(i)).c_str()));
        }
        return out;
    }

    /* " host=... port=..." of B's first TCP listener, for a raw command */
    std::string target_addr()
    {
        std::vector<std::string> ls = listeners();
        EXPECT_FALSE(ls.empty()) << "softnic has no TCP listener";
        if (ls.empty()) {
            return "";
        }
        std::string ip   = ls[0].substr(0, ls[0].find(':'));
        std::string port = ls[0].substr(ls[0].find(':') + 1);
        return " host=" + (ip == "0.0.0.0" ? ip_of('b') : ip) + " port=" + port;
    }

    void attack(const std::string &c)
    {
        std::vector<std::string> ls = listeners();
        if (ls.empty()) {
            GTEST_SKIP() << "softnic has no TCP listener on " << dev_name()
                         << " (same-host traffic uses shared memory)";
        }
        for (const std::string &l : ls) {
            std::string ip   = l.substr(0, l.find(':'));
            std::string port = l.substr(l.find(':') + 1);
            if (ip == "0.0.0.0") {
                ip = ip_of('b');
            }
            reply_t r =
                m_a->cmd("raw host=" + ip + " port=" + port + " case=" + c,
                         120000);
            EXPECT_TRUE(r.ok) << r.line;
            EXPECT_GT(r.u("sessions"), 0u) << "could not connect to " << l;
        }
        expect_survived();
    }

    void expect_survived()
    {
        reply_t p = m_b->cmd("ping");
        ASSERT_TRUE(p.ok) << "softnic peer died under hostile input: "
                          << p.line;
        EXPECT_OK(m_b->cmd("guardcheck id=1"))
            << "memory outside the registered region was written";
        EXPECT_OK(m_b->cmd("check id=1 len=4096 seed=21"));
        /* [16 KiB, 32 KiB) is the scratch area of the crafted frames */
        EXPECT_OK(m_b->cmd("check id=1 off=4096 len=12288 seed=20"));
        EXPECT_OK(m_b->cmd("check id=1 off=32768 pos=28672 len=32768 "
                           "seed=20"));

        /* the QP connected before the attack still works */
        ASSERT_OK(m_a->cmd("fill id=1 len=4096 seed=22"));
        wc_t wc =
            post_wait(*m_a, "qp=0 op=WRITE mr=1 len=4096 wr=2" + remote(8192));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(m_b->cmd("check id=1 off=8192 len=4096 seed=22"));

        /* and a new one can be made */
        ASSERT_NO_FATAL_FAILURE(connect(*m_a, 1, *m_b, 1));
        wc = post_wait(*m_a, "qp=1 op=READ mr=1 len=4096 wr=3" + remote(8192));
        EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
        EXPECT_OK(m_a->cmd("check id=1 len=4096 seed=22"));
    }

    peer_proc *m_a = nullptr, *m_b = nullptr;
    mr_t m_la, m_rb;
};

/* Little-endian frame builder for the crafted frames below. */
struct frame_t {
    std::vector<uint8_t> b;
    frame_t &u8(uint8_t v)
    {
        b.push_back(v);
        return *this;
    }
    frame_t &u16(uint16_t v)
    {
        return u8(v & 0xff).u8(v >> 8);
    }
    frame_t &u32(uint32_t v)
    {
        return u16(v & 0xffff).u16(v >> 16);
    }
    frame_t &u64(uint64_t v)
    {
        return u32((uint32_t)v).u32((uint32_t)(v >> 32));
    }
    frame_t &bytes(size_t n, uint8_t v)
    {
        b.insert(b.end(), n, v);
        return *this;
    }
    frame_t &append(const frame_t &f)
    {
        b.insert(b.end(), f.b.begin(), f.b.end());
        return *this;
    }
};

/* Wire v6 of softnic (src/softnic/sn_wire.h): byte 0 of every frame is its
 * type. HELLO (72 bytes, the instance), CHAN_OPEN (32 bytes, the QP pair),
 * request header (56 bytes: its last fields the requests of ours the
 * sender acknowledges, and the target's channel id), REQ_DATA (32 bytes:
 * more of a request's payload). If the format changes these become
 * malformed frames, still hostile. */
const uint16_t WIRE_VERSION = 6; /* SN_WIRE_VERSION, sn_wire.h */
const uint32_t MAGIC        = 0x4f524348u;

/* Channel ids: one channel per stream, whose id is SN_CHAN_ID_ONE at both
 * ends, so a raw initiator names the target's channel before its CHAN_ACK
 * comes. INI_CHAN is the id our CHAN_OPEN gives ours. */
const uint32_t TGT_CHAN = 1u << 16, INI_CHAN = 0x10007;

enum {
    CHAN_OPEN = 0x21,
    CHAN_ACK  = 0x22
};

frame_t hello(uint16_t version = WIRE_VERSION)
{
    frame_t f;
    f.u32(MAGIC).u16(version).u16(1).u32(0).u32(0);
    return f.bytes(40, 0).u32(1).u32(0).u32(0).u16(0).u16(0);
}

frame_t chan_open(uint32_t src_qpn, uint32_t dst_qpn)
{
    frame_t f;
    f.u8(CHAN_OPEN).u8(0).u16(0).u32(0).u32(INI_CHAN).u32(src_qpn);
    return f.u32(dst_qpn).u32(0).u32(0).u32(0);
}

/* A stream's first frames: HELLO, then a channel from src_qpn to dst_qpn */
frame_t hello_open(uint32_t src_qpn, uint32_t dst_qpn)
{
    return hello().append(chan_open(src_qpn, dst_qpn));
}

frame_t req(uint8_t op, uint32_t seq, uint32_t length, uint32_t rkey,
            uint64_t raddr, uint32_t acked = 0, uint32_t chan = TGT_CHAN)
{
    frame_t f;
    f.u8(op).u8(0).u16(0).u32(seq).u32(length).u32(rkey).u64(raddr);
    return f.u64(1).u64(0).u32(0).u32(acked).u32(chan).u32(0);
}

enum {
    OP_WRITE = 1,
    OP_SEND  = 3,
    OP_READ  = 5,
    OP_FADD  = 7,
    REQ_DATA = 8
};

/* The most payload a frame carries (SN_FRAME_MAX, sn_int.h) */
const uint32_t FRAME_MAX = 1 << 20;

/* REQ_DATA: length more bytes of request seq's payload, from offset on */
frame_t req_data(uint32_t seq, uint32_t offset, uint32_t length,
                 uint8_t flags = 0)
{
    frame_t f;
    f.u8(REQ_DATA).u8(flags).u16(0).u32(seq).u32(length).u32(offset);
    return f.u64(0).u32(TGT_CHAN).u32(0);
}

/* What the target answers: HELLO_ACK (72 bytes: its version at offset 4,
 * its status at offset 8), CHAN_ACK (32 bytes: type, flags, status (2
 * bytes), our id, its id) and responses (32 bytes: type, NAK code, rnr
 * timer, reserved, seq) */
const size_t HELLO_LEN = 72, CHANF_LEN = 32, RSP_LEN = 32;
const size_t OPENED_LEN = HELLO_LEN + CHANF_LEN;

enum {
    RSP_ACK = 0x11,
    RSP_NAK = 0x12
};

uint32_t le32_at(const std::vector<uint8_t> &b, size_t off)
{
    return (uint32_t)b[off] | ((uint32_t)b[off + 1] << 8) |
           ((uint32_t)b[off + 2] << 16) | ((uint32_t)b[off + 3] << 24);
}

/* The bytes a rawopen / rawclose read ("got=" of its reply) */
std::vector<uint8_t> got_bytes(const reply_t &r)
{
    std::vector<uint8_t> b;
    EXPECT_TRUE(r.ok) << r.line;
    EXPECT_TRUE(from_hex(r.s("got"), &b)) << r.line;
    return b;
}

/* got begins with an accepting HELLO_ACK and CHAN_ACK */
void expect_opened(const std::vector<uint8_t> &got)
{
    ASSERT_LE(OPENED_LEN, got.size())
        << "the target did not answer the HELLO and the CHAN_OPEN: "
        << to_hex(got.data(), got.size());
    EXPECT_EQ(0u, le32_at(got, 8)) << "HELLO_ACK refused the stream";
    EXPECT_EQ(CHAN_ACK, got[HELLO_LEN]);
    EXPECT_EQ(0u, got[HELLO_LEN + 2] | (got[HELLO_LEN + 3] << 8))
        << "CHAN_ACK refused the channel";
    EXPECT_EQ(INI_CHAN, le32_at(got, HELLO_LEN + 4));
    EXPECT_EQ(TGT_CHAN, le32_at(got, HELLO_LEN + 8));
}

/* got holds an accepting HELLO_ACK and CHAN_ACK, then an ACK of request
 * seq */
void expect_hello_ack_then_ack(const std::vector<uint8_t> &got, uint32_t seq)
{
    ASSERT_EQ(OPENED_LEN + RSP_LEN, got.size())
        << "the target did not answer the HELLO, the CHAN_OPEN and the "
           "request: "
        << to_hex(got.data(), got.size());
    ASSERT_NO_FATAL_FAILURE(expect_opened(got));
    EXPECT_EQ(RSP_ACK, got[OPENED_LEN])
        << "response type (NAK code " << (int)got[OPENED_LEN + 1] << ")";
    EXPECT_EQ(seq, le32_at(got, OPENED_LEN + 4));
    EXPECT_EQ(INI_CHAN, le32_at(got, OPENED_LEN + 24)) << "response's chan";
}

/* A raw connection from a to addr (" host= port="), kept open, sending
 * open (a HELLO, then one request): both must be answered, the request
 * with an ACK */
void raw_open_acked(peer_proc &a, const std::string &addr, const frame_t &open)
{
    reply_t r = a.cmd("rawopen" + addr +
                      " expect=" + std::to_string(OPENED_LEN + RSP_LEN) +
                      " data=" + to_hex(open.b.data(), open.b.size()));
    ASSERT_NO_FATAL_FAILURE(expect_hello_ack_then_ack(got_bytes(r), 0));
}

/* Send rest on a's raw connection and end our side: the target must
 * answer nothing (what: the request, for the message) and close */
void raw_close_silent(peer_proc &a, const frame_t &rest, const char *what)
{
    reply_t r = a.cmd("rawclose data=" + to_hex(rest.b.data(), rest.b.size()));
    ASSERT_TRUE(r.ok) << r.line;
    EXPECT_EQ(0u, r.u("got_len"))
        << "B's QP in ERR answered " << what << ": " << r.s("got");
    EXPECT_EQ(1u, r.u("eof")) << "B kept the connection open: " << r.line;
}

/* Frames that know the wire format: unknown QPN, lying lengths, requests
 * out of range, requests with the wrong sequence, garbage after a valid
 * HELLO. None may crash the target or write outside its MR. */
TEST_P(softnic_hostile, crafted_frames)
{
    std::vector<std::string> ls = listeners();
    ASSERT_FALSE(ls.empty()) << "softnic has no TCP listener";
    uint32_t src = m_last_ea.qpn, dst = m_last_eb.qpn, rkey = m_rb.rkey;
    uint64_t base = m_rb.addr, scratch = base + 16384;

    std::vector<std::pair<std::string, frame_t>> cases;
    cases.push_back({"unknown dst qpn", hello_open(src, 0xabcdef)});
    cases.push_back(
        {"unknown src qpn", hello_open(0x123456, dst)
                                .append(req(OP_WRITE, 0, 64, rkey, scratch))
                                .bytes(64, 0xee)});
    cases.push_back({"bad version", hello(99)});
    cases.push_back({"bad magic", frame_t().u32(MAGIC + 1).append(hello())});
    cases.push_back({"payload shorter than length",
                     hello_open(src, dst)
                         .append(req(OP_WRITE, 0, 4096, rkey, scratch))
                         .bytes(100, 0xee)});
    cases.push_back(
        {"length beyond the MR end",
         hello_open(src, dst)
             .append(req(OP_WRITE, 0, 256 << 10, rkey, base + 65536 - 64))
             .bytes(256 << 10, 0xee)});
    cases.push_back({"length 4 GiB - 1",
                     hello_open(src, dst)
                         .append(req(OP_WRITE, 0, 0xffffffffu, rkey, scratch))
                         .bytes(65536, 0xee)});
    cases.push_back(
        {"address wraps", hello_open(src, dst)
                              .append(req(OP_WRITE, 0, 4096, rkey, ~0ull - 100))
                              .bytes(4096, 0xee)});
    cases.push_back(
        {"READ longer than the MR",
         hello_open(src, dst).append(req(OP_READ, 0, 1 << 24, rkey, scratch))});
    cases.push_back({"atomic with length 4096",
                     hello_open(src, dst)
                         .append(req(OP_FADD, 0, 4096, rkey, scratch))
                         .bytes(4096, 0xee)});
    cases.push_back(
        {"atomic beyond the MR end",
         hello_open(src, dst).append(req(OP_FADD, 0, 8, rkey, base + 65536))});
    cases.push_back(
        {"wrong sequence", hello_open(src, dst)
                               .append(req(OP_WRITE, 77, 1000, rkey, base))
                               .bytes(1000, 0xee)});
    cases.push_back({"SEND without receive",
                     hello_open(src, dst)
                         .append(req(OP_SEND, 0, 256 << 10, rkey, 0))
                         .bytes(256 << 10, 0xee)});
    /* the target QP sent the initiator nothing: nothing to acknowledge */
    cases.push_back({"acknowledges requests never sent",
                     hello_open(src, dst)
                         .append(req(OP_WRITE, 0, 64, rkey, base + 24576, 5))
                         .bytes(64, 0xee)});
    cases.push_back(
        {"unknown opcode", hello_open(src, dst)
                               .append(req(200, 0, 64, rkey, scratch))
                               .bytes(64, 0xee)});
    frame_t garbage = hello_open(src, dst);
    for (int i = 0; i < 4096; ++i) {
        garbage.u8((uint8_t)(i * 131 + 7));
    }
    cases.push_back({"garbage after hello", garbage});

    std::string addr = target_addr();
    for (auto &c : cases) {
        SCOPED_TRACE(c.first);
        reply_t r = m_a->cmd("raw" + addr + " case=hex data=" +
                                 to_hex(c.second.b.data(), c.second.b.size()),
                             60000);
        EXPECT_TRUE(r.ok) << r.line;
        /* after our EOF the target must drop the connection, not keep a
         * half-read frame (and its buffers) forever */
        EXPECT_EQ(0u, r.u("open_after_eof"))
            << c.first << ": the target kept the connection open: " << r.line;
        reply_t p = m_b->cmd("ping");
        ASSERT_TRUE(p.ok) << "target died after: " << c.first;
        EXPECT_OK(m_b->cmd("guardcheck id=1")) << "after: " << c.first;
    }
    /* the lying WRITE was not executed */
    EXPECT_OK(m_b->cmd("check id=1 off=24576 pos=20480 len=64 seed=20"));
    expect_survived();
}

/* rawopen of data from a to addr, reading up to expect bytes (or to the
 * end of the stream), then rawclose: what the target answered, and
 * *eof: whether it had closed the stream by then */
std::vector<uint8_t> raw_exchange(peer_proc &a, const std::string &addr,
                                  const frame_t &data, size_t expect, int *eof,
                                  int timeout_ms = CMD_TIMEOUT_MS)
{
    reply_t r = a.cmd("rawopen" + addr + " expect=" + std::to_string(expect) +
                          " data=" + to_hex(data.b.data(), data.b.size()),
                      timeout_ms);
    std::vector<uint8_t> got = got_bytes(r);
    *eof                     = (int)r.u("eof");
    EXPECT_TRUE(a.cmd("rawclose").ok);
    return got;
}

/* Frames that an open channel does not take (sn_stream.c,
 * sn_stream_rx_header and sn_stream_rx_hdr): each is malformed and closes
 * the stream, so the valid WRITE behind it is neither executed nor
 * answered: the target answers the HELLO and the CHAN_OPEN, then ends the
 * stream. Each fails on its own check: the unknown type is a request in
 * all but its type byte (it names the target's channel where a request
 * does), so that only the type switch refuses it. */
TEST_P(softnic_hostile, frames_the_channel_does_not_take)
{
    uint32_t src = m_last_ea.qpn, dst = m_last_eb.qpn, rkey = m_rb.rkey;
    uint64_t at     = m_rb.addr + 24576 + 128; /* [24 KiB + 128, + 64) */
    frame_t unknown = req(0x30, 0, 0, rkey, at), rsp;
    /* an ACK the target's QP would take as a duplicate (it sent nothing:
     * ACK of seq -1), were it read as its initiator's */
    rsp.u8(RSP_ACK).u8(0).u16(0).u32(0xffffffffu).u32(0).u32(0).u64(0);
    rsp.u32(TGT_CHAN).u32(0);

    std::vector<std::pair<std::string, frame_t>> cases;
    cases.push_back({"unknown frame type", unknown});
    cases.push_back({"response-typed frame to a target", rsp});
    cases.push_back(
        {"a channel the stream does not carry",
         req(OP_WRITE, 0, 64, rkey, at, 0, TGT_CHAN + 1).bytes(64, 0xee)});
    cases.push_back({"a second CHAN_OPEN", chan_open(src, dst)});

    std::string addr = target_addr();
    for (auto &c : cases) {
        SCOPED_TRACE(c.first);
        frame_t f = hello_open(src, dst)
                        .append(c.second)
                        .append(req(OP_WRITE, 0, 64, rkey, at))
                        .bytes(64, 0xee);
        int eof;
        std::vector<uint8_t> got =
            raw_exchange(*m_a, addr, f, OPENED_LEN + RSP_LEN, &eof);
        ASSERT_NO_FATAL_FAILURE(expect_opened(got));
        EXPECT_EQ(OPENED_LEN, got.size())
            << "the stream took the frame: " << to_hex(got.data(), got.size());
        EXPECT_EQ(1, eof) << "the target kept the stream open";
    }
    EXPECT_OK(m_b->cmd("check id=1 off=24704 pos=20608 len=64 seed=20"))
        << "a WRITE behind a malformed frame was executed";
    expect_survived();
}

/* REQ_DATA frames that do not continue their channel's request
 * (sn_resp.c, sn_resp_data_refusal), and a request while REQ_DATA frames
 * are due (sn_resp_on_header): each closes the stream unanswered (nothing
 * after the HELLO_ACK and CHAN_ACK). Each case fails on its own check
 * alone: with that check gone the stream takes the frame and waits for
 * more (it stays open), or, with no request in progress, answers. The
 * large WRITE (seq 0, into B's region 2) sends its request frame whole
 * (FRAME_MAX bytes), so that its REQ_DATA frames are due. */
TEST_P(softnic_hostile, req_data_that_does_not_continue_its_request)
{
    uint32_t src = m_last_ea.qpn, dst = m_last_eb.qpn, rkey = m_rb.rkey;
    uint64_t at = m_rb.addr + 24576 + 256; /* [24 KiB + 256, + 64) */
    mr_t big    = reg_mr(*m_b, 2, 3 << 20);
    ASSERT_FALSE(HasFailure());
    auto large = [&](uint32_t len) {
        return req(OP_WRITE, 0, len, big.rkey, big.addr).bytes(FRAME_MAX, 0xdd);
    };
    frame_t valid = req(OP_WRITE, 0, 64, rkey, at).bytes(64, 0xee);

    std::vector<std::pair<std::string, frame_t>> cases;
    cases.push_back(
        {"no request in progress", req_data(0, 0, 0).append(valid)});
    cases.push_back({"another request's",
                     large(FRAME_MAX + 64).append(req_data(1, FRAME_MAX, 64))});
    cases.push_back(
        {"not at the offset due",
         large(FRAME_MAX + 64).append(req_data(0, FRAME_MAX + 8, 56))});
    cases.push_back({"longer than a frame",
                     large(2 * FRAME_MAX + 64)
                         .append(req_data(0, FRAME_MAX, FRAME_MAX + 64))});
    cases.push_back(
        {"longer than what is due",
         large(FRAME_MAX + 64).append(req_data(0, FRAME_MAX, 128))});
    cases.push_back(
        {"a request while REQ_DATA frames are due",
         large(FRAME_MAX + 64).append(req(OP_WRITE, 1, 64, rkey, at))});
    cases.push_back(
        {"reserved fields set",
         large(FRAME_MAX + 64).append(req_data(0, FRAME_MAX, 64, 1))});

    std::string addr = target_addr();
    for (auto &c : cases) {
        SCOPED_TRACE(c.first);
        int eof;
        std::vector<uint8_t> got =
            raw_exchange(*m_a, addr, hello_open(src, dst).append(c.second),
                         OPENED_LEN + RSP_LEN, &eof, 60000);
        ASSERT_NO_FATAL_FAILURE(expect_opened(got));
        EXPECT_EQ(OPENED_LEN, got.size())
            << "the stream took the frame: " << to_hex(got.data(), got.size());
        EXPECT_EQ(1, eof) << "the target kept the stream open";
    }
    EXPECT_OK(m_b->cmd("check id=1 off=24832 pos=20736 len=64 seed=20"))
        << "a WRITE behind a REQ_DATA frame refused was executed";
    expect_survived();
}

/* A CHAN_OPEN for a QP the target does not have: the HELLO is accepted,
 * the channel refused (CHAN_ACK ENOENT, naming no channel of the target),
 * and the stream closes (one channel per stream) */
TEST_P(softnic_hostile, channel_open_for_unknown_qp_is_refused)
{
    int eof;
    std::vector<uint8_t> got =
        raw_exchange(*m_a, target_addr(), hello_open(m_last_ea.qpn, 0xabcdef),
                     OPENED_LEN + 1, &eof);
    ASSERT_EQ(OPENED_LEN, got.size()) << to_hex(got.data(), got.size());
    EXPECT_EQ(0u, le32_at(got, 8)) << "HELLO_ACK refused the stream";
    EXPECT_EQ(CHAN_ACK, got[HELLO_LEN]);
    EXPECT_EQ((unsigned)ENOENT, got[HELLO_LEN + 2] | (got[HELLO_LEN + 3] << 8))
        << "CHAN_ACK's status";
    EXPECT_EQ(INI_CHAN, le32_at(got, HELLO_LEN + 4));
    EXPECT_EQ(0u, le32_at(got, HELLO_LEN + 8)) << "a refusal names a channel";
    EXPECT_EQ(1, eof) << "the target kept the stream open";
    expect_survived();
}

/* A HELLO of another wire version (v4's, with its per-QP fields; a v4
 * initiator waits for the answer) is refused: HELLO_ACK with
 * EPROTONOSUPPORT where v4 reads its status (offset 8), this end's version
 * in it, and the stream closes */
TEST_P(softnic_hostile, other_wire_version_is_refused)
{
    frame_t v4;
    v4.u32(MAGIC).u16(4).u16(1).u32(m_last_ea.qpn).u32(m_last_eb.qpn);
    v4.bytes(40, 0).u32(1).u32(0).u32(0).u32(0);
    int eof;
    std::vector<uint8_t> got =
        raw_exchange(*m_a, target_addr(), v4, HELLO_LEN + 1, &eof);
    ASSERT_EQ(HELLO_LEN, got.size()) << to_hex(got.data(), got.size());
    EXPECT_EQ(MAGIC, le32_at(got, 0));
    EXPECT_EQ(WIRE_VERSION, got[4] | (got[5] << 8));
    EXPECT_EQ(2, got[6] | (got[7] << 8)) << "not a HELLO_ACK";
    EXPECT_EQ((uint32_t)EPROTONOSUPPORT, le32_at(got, 8)) << "its status";
    EXPECT_EQ(1, eof) << "the target kept the stream open";
    expect_survived();
}

/* Same host: SENDs travel through shared-memory rings that the initiator
 * writes. A broken or hostile initiator (A) fills every ring it has mapped
 * with garbage while B consumes it: B must survive, complete what it can
 * with errors, and write nothing outside its receive buffers. */
TEST_P(softnic_hostile, corrupted_send_ring)
{
    if (two_hosts()) {
        GTEST_SKIP() << "shared-memory rings exist only between processes "
                        "of one host";
    }
    /* B's receives land in [16 KiB, 16 KiB + 8 * 256) of its MR 1 */
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 off=16384 len=256 wr=0 count=8 "
                       "stride=256"));
    wc_t wc = post_wait(*m_a, "qp=0 op=SEND mr=1 len=64 wr=10");
    ASSERT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    ASSERT_EQ(1u, poll(*m_b, "recv", 1).size());

    const char *modes[] = {"rand", "ff", "zero", "rand"};
    for (const char *mode : modes) {
        SCOPED_TRACE(mode);
        /* a SEND in flight in the ring, then the ring is trashed */
        ASSERT_OK(m_a->cmd("post qp=0 op=SEND mr=1 len=64 wr=11"));
        reply_t r = m_a->cmd(std::string("scribble mode=") + mode);
        ASSERT_TRUE(r.ok) << r.line;
        if (r.u("rings") == 0) {
            GTEST_SKIP() << "no SEND ring mapped in the initiator";
        }
        /* B consumes (cq_poll and its service thread) */
        reply_t pr = m_b->cmd("poll cq=recv n=8 timeout=300");
        ASSERT_TRUE(pr.ok) << "receiver failed on a corrupted ring: "
                           << pr.line;
        ASSERT_TRUE(m_b->cmd("ping").ok) << "receiver died";
        EXPECT_OK(m_b->cmd("guardcheck id=1"));
        EXPECT_OK(m_b->cmd("check id=1 len=4096 seed=21"));
        EXPECT_OK(m_b->cmd("check id=1 off=4096 len=12288 seed=20"));
        EXPECT_OK(m_b->cmd("check id=1 off=32768 pos=28672 len=32768 "
                           "seed=20"));
        EXPECT_OK(m_b->cmd("check id=1 off=18432 pos=14336 len=14336 "
                           "seed=20"));
    }
    /* the hostile initiator may well have broken itself */
    m_a->kill9();
    /* B still makes new connections with a healthy initiator */
    peer_proc &c = spawn('a');
    mr_t lc      = reg_mr(c, 1, 65536);
    ASSERT_NE(0u, lc.addr);
    ASSERT_NO_FATAL_FAILURE(connect(c, 0, *m_b, 5));
    ASSERT_OK(c.cmd("fill id=1 len=4096 seed=23"));
    wc = post_wait(c, "qp=0 op=WRITE mr=1 len=4096 wr=1" + remote(8192));
    EXPECT_EQ(IBV_WC_SUCCESS, wc.status) << wc_status_name(wc.status);
    EXPECT_OK(m_b->cmd("check id=1 off=8192 len=4096 seed=23"));
    EXPECT_OK(m_b->cmd("guardcheck id=1"));
}

TEST_P(softnic_hostile, connect_and_close)
{
    attack("connect_close");
}

TEST_P(softnic_hostile, short_frames)
{
    attack("short");
}

TEST_P(softnic_hostile, garbage_frames)
{
    attack("garbage");
}

TEST_P(softnic_hostile, oversized_frames)
{
    attack("oversized");
}

TEST_P(softnic_hostile, lying_length_fields)
{
    attack("lying");
}

/* Over TCP a target QP in ERR answers nothing, as an IB responder in error
 * drops what comes (sn_resp.c, check_qp; rule SN_RULE_TCP_ERR_SILENT). The
 * "not ready" NAK that it would send instead ends the initiator's WR the
 * same way (by the transport budget), so only the wire tells them apart: a
 * raw initiator speaking as A's QP gets an ACK while B's QP is in RTS (the
 * channel works), then, on the same connection once the QP is in ERR,
 * nothing before the end of the stream. */
TEST_P(softnic_hostile, target_in_error_is_silent_on_tcp)
{
    uint64_t scratch = m_rb.addr + 16384;
    frame_t open     = hello_open(m_last_ea.qpn, m_last_eb.qpn)
                       .append(req(OP_WRITE, 0, 64, m_rb.rkey, scratch))
                       .bytes(64, 0xee);
    ASSERT_NO_FATAL_FAILURE(raw_open_acked(*m_a, target_addr(), open));

    ASSERT_OK(m_b->cmd("modify qp=0 state=ERR"));
    frame_t late =
        req(OP_WRITE, 1, 64, m_rb.rkey, scratch + 64).bytes(64, 0xdd);
    ASSERT_NO_FATAL_FAILURE(raw_close_silent(*m_a, late, "a request"));
    reply_t p = m_b->cmd("ping");
    ASSERT_TRUE(p.ok) << p.line;
}

/* The same when the QP goes to ERR while a SEND's payload is arriving
 * (sn_resp.c, check_state): the receive the SEND took at its header is
 * flushed and nothing is answered. The SEND before it is answered (the
 * channel works). */
TEST_P(softnic_hostile, target_in_error_mid_send_is_silent_on_tcp)
{
    const uint32_t len = 4096, first = 1000;
    ASSERT_OK(m_b->cmd("recv qp=0 mr=1 off=16384 len=4096 wr=0 count=2"));
    frame_t open = hello_open(m_last_ea.qpn, m_last_eb.qpn)
                       .append(req(OP_SEND, 0, 64, 0, 0))
                       .bytes(64, 0xee)
                       .append(req(OP_SEND, 1, len, 0, 0))
                       .bytes(first, 0xdd);
    ASSERT_NO_FATAL_FAILURE(raw_open_acked(*m_a, target_addr(), open));
    std::vector<wc_t> wcs = poll(*m_b, "recv", 1);
    ASSERT_EQ(1u, wcs.size());
    EXPECT_EQ(IBV_WC_SUCCESS, wcs[0].status) << wc_status_name(wcs[0].status);

    ASSERT_OK(m_b->cmd("modify qp=0 state=ERR"));
    /* the second SEND took its receive when its header came (B reads the
     * two frames in one pass, the ACK of the first is sent within it):
     * the ERR transition has no receive of the queue left to flush. If B
     * was slower than the test, the receive was flushed here instead and
     * the header meets the QP in ERR: it must be silent all the same. */
    wcs = poll(*m_b, "recv", 1, 0);
    if (!wcs.empty()) {
        std::cout << "[ NOTE     ] the QP went to ERR before the SEND's "
                     "header was read\n";
    }
    frame_t rest;
    rest.bytes(len - first, 0xdd);
    ASSERT_NO_FATAL_FAILURE(raw_close_silent(*m_a, rest, "a SEND"));
    if (wcs.empty()) {
        wcs = poll(*m_b, "recv", 1);
    }
    ASSERT_EQ(1u, wcs.size()) << "the second receive was not flushed";
    EXPECT_EQ(1u, wcs[0].wr_id);
    EXPECT_EQ(IBV_WC_WR_FLUSH_ERR, wcs[0].status)
        << wc_status_name(wcs[0].status);
}

INSTANTIATE_TEST_SUITE_P(topo, softnic_hostile,
                         ::testing::Values(TOPO_SAME_HOST, TOPO_TWO_HOSTS),
                         topology_name);

} /* namespace */
