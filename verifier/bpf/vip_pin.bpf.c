// SPDX-License-Identifier: Apache-2.0
//
// VIP pin mode's forwarding path as a tc ingress program (SPEC.md §10.3, issue 16 item 5).
// Loaded by `src/sys/bpf.rs` (aya), built by `build.rs` (clang -target bpf).
//
// For a TCP or UDP packet to a pinned VIP (`mc_vips`: VIP → source mask), unfragmented, without
// IP options and with TTL > 1: the flow (source, VIP, both ports, protocol) is looked up in
// `mc_flows` (an LRU hash with the last time a packet was seen, so that a pin times out like
// conntrack's entry: an open TCP connection after 5 days idle, one seen only by its SYN or
// closed by a FIN or RST after 120 s, UDP after 120 s). A live pin names its member; a flow
// without one takes the member of its source's slice (`mc_slices`: VIP and `saddr & mask` →
// member, written by the verifier on every re-point) and is pinned there. A SYN without ACK
// forgets its tuple's pin first, so a new connection follows the map. The member's hop
// (`mc_hops`: member → interface and next-hop address) gets the packet with its TTL
// decremented, through `bpf_redirect_neigh`: the hop the nft plane's `fwd ip to` takes.
//
// IPv6 (SPEC.md §10.3.1) is the same with maps of its own (`mc_vips6`, `mc_slices6`,
// `mc_hops6`, `mc_flows6`: an IPv4-only deployment's maps keep their layout), for TCP or UDP
// right after the IPv6 header with hop limit > 1; the flow key is the whole 5-tuple, the hop a
// link-local next hop on the member's interface.
//
// Everything else returns TC_ACT_OK and meets the nft VIP plane as before: other
// destinations, fragments, IP options and IPv6 extension headers, TTL or hop limit <= 1,
// other protocols, a source whose slice has no owner (the gap policy), a member with no hop.
// All maps are pinned by name under the verifier's pin directory, so the pins outlive the
// verifier and the next one finds them.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// A flow's state, which picks its timeout.
#define NEW 0     // TCP: only its SYN (or a first packet) seen so far: 120 s
#define OPEN 1    // TCP: a packet with none of FIN, SYN, RST seen: 5 days
#define CLOSING 2 // TCP: a FIN or RST seen: 120 s, for good
#define DATAGRAM 3 // UDP: 120 s

#define SECOND 1000000000ULL
#define TCP_OPEN_NS (432000ULL * SECOND)
#define SHORT_NS (120ULL * SECOND)

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u32 ports; // the transport header's first 32 bits: sport, dport
	__u32 proto;
};

struct flow {
	__u32 member;
	__u32 state;
	__u64 seen; // bpf_ktime_get_coarse_ns of the last packet
};

struct slice_key {
	__u32 vip;
	__u32 value; // saddr & mask, network order
};

struct hop {
	__u32 ifindex;
	__u32 via; // network order
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct slice_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_slices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct hop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_hops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 19);
	__type(key, struct flow_key);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_flows SEC(".maps");

struct flow_key6 {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 ports;
	__u32 proto;
};

struct slice_key6 {
	__u32 vip[4];
	__u32 value[4]; // saddr & mask, network order
};

struct hop6 {
	__u32 ifindex;
	__u32 pad;
	__u32 via[4]; // link-local, network order
	__u64 packets;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct in6_addr);
	__type(value, struct in6_addr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_vips6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct slice_key6);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_slices6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct hop6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_hops6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 19);
	__type(key, struct flow_key6);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mc_flows6 SEC(".maps");

static __always_inline int expired(const struct flow *f, __u64 now)
{
	__u64 limit = f->state == OPEN ? TCP_OPEN_NS : SHORT_NS;
	return now - f->seen > limit;
}

// The flow's member: its live pin in `flows` (refreshed, its TCP state moved on; a SYN without
// ACK forgets it first), else the owner of its slice in `slices`, pinned now. -1: neither.
static __always_inline __s64 flow_member(void *flows, void *key, void *slices, void *slice,
					 __u8 proto, __u8 flags)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct flow *f = 0;
	// 0x12: SYN and ACK; 0x02 alone is a new connection's first packet.
	if (proto == IPPROTO_TCP && (flags & 0x12) == 0x02)
		bpf_map_delete_elem(flows, key);
	else
		f = bpf_map_lookup_elem(flows, key);
	if (f && expired(f, now))
		f = 0;
	if (f) {
		if (proto == IPPROTO_TCP) {
			// 0x05: FIN or RST; 0x07: FIN, SYN or RST.
			if (flags & 0x05)
				f->state = CLOSING;
			else if (f->state == NEW && !(flags & 0x07))
				f->state = OPEN;
		}
		if (f->seen != now)
			f->seen = now;
		return f->member;
	}
	__u32 *m = bpf_map_lookup_elem(slices, slice);
	if (!m)
		return -1;
	struct flow nf = {
		.member = *m,
		.state = proto == IPPROTO_UDP ? DATAGRAM : (flags & 0x05) ? CLOSING : NEW,
		.seen = now,
	};
	bpf_map_update_elem(flows, key, &nf, BPF_ANY);
	return nf.member;
}

// The transport header's flags byte (TCP) into `flags`; 0 when the packet is not TCP or UDP
// or too short for its header.
static __always_inline int transport(__u8 proto, __u8 *l4, void *end, __u8 *flags)
{
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > end)
			return 0;
		*flags = l4[13];
		return 1;
	}
	if (proto == IPPROTO_UDP)
		return (void *)(l4 + 4) <= end;
	return 0;
}

// An IPv6 packet: the same path with the IPv6 maps, TCP or UDP right after the header only.
static __always_inline int vip_pin6(struct ipv6hdr *ip, void *end)
{
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	struct in6_addr daddr = ip->daddr;
	struct in6_addr *mask = bpf_map_lookup_elem(&mc_vips6, &daddr);
	if (!mask || ip->hop_limit <= 1)
		return TC_ACT_OK;
	__u8 proto = ip->nexthdr;
	__u8 *l4 = (void *)(ip + 1);
	__u8 flags = 0;
	if (!transport(proto, l4, end, &flags))
		return TC_ACT_OK;
	struct flow_key6 k = { .ports = *(__u32 *)l4, .proto = proto };
	struct slice_key6 sk = {};
	for (int i = 0; i < 4; i++) {
		k.saddr[i] = ip->saddr.in6_u.u6_addr32[i];
		k.daddr[i] = daddr.in6_u.u6_addr32[i];
		sk.vip[i] = k.daddr[i];
		sk.value[i] = k.saddr[i] & mask->in6_u.u6_addr32[i];
	}
	__s64 member = flow_member(&mc_flows6, &k, &mc_slices6, &sk, proto, flags);
	if (member < 0)
		return TC_ACT_OK;
	__u32 m = member;
	struct hop6 *h = bpf_map_lookup_elem(&mc_hops6, &m);
	if (!h)
		return TC_ACT_OK;
	ip->hop_limit--;
	__sync_fetch_and_add(&h->packets, 1);
	struct bpf_redir_neigh nh = { .nh_family = AF_INET6 };
	for (int i = 0; i < 4; i++)
		nh.ipv6_nh[i] = h->via[i];
	return bpf_redirect_neigh(h->ifindex, &nh, sizeof(nh), 0);
}

SEC("classifier")
int vip_pin(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return vip_pin6((void *)(eth + 1), end);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	__u32 daddr = ip->daddr;
	__u32 *mask = bpf_map_lookup_elem(&mc_vips, &daddr);
	if (!mask)
		return TC_ACT_OK;
	if (ip->ttl <= 1 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	__u8 proto = ip->protocol;
	__u8 *l4 = (void *)(ip + 1);
	__u8 flags = 0;
	if (!transport(proto, l4, end, &flags))
		return TC_ACT_OK;
	struct flow_key k = {
		.saddr = ip->saddr,
		.daddr = daddr,
		.ports = *(__u32 *)l4,
		.proto = proto,
	};
	struct slice_key sk = { .vip = daddr, .value = k.saddr & *mask };
	__s64 member = flow_member(&mc_flows, &k, &mc_slices, &sk, proto, flags);
	if (member < 0)
		return TC_ACT_OK;
	__u32 m = member;
	struct hop *h = bpf_map_lookup_elem(&mc_hops, &m);
	if (!h)
		return TC_ACT_OK;
	// ip_decrease_ttl: the TTL is the high byte of its 16-bit word.
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->ttl--;
	__sync_fetch_and_add(&h->packets, 1);
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = h->via };
	return bpf_redirect_neigh(h->ifindex, &nh, sizeof(nh), 0);
}

char LICENSE[] SEC("license") = "Apache-2.0";
