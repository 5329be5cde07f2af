//! A small synchronous rtnetlink client (netlink-packet-route over a netlink socket): the
//! few link, address and route requests Wharf's bridges and veths need. Synchronous so
//! that it can run on a thread that has entered a container's network namespace.

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::Socket;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

/// A netlink request failed; `errno` is the kernel's error number (positive), 0 for a
/// transport or decoding failure.
#[derive(Debug, thiserror::Error)]
#[error("netlink {what}: {message}")]
pub struct NetlinkError {
    /// What was asked.
    pub what: String,
    /// The kernel's errno, 0 if not from the kernel.
    pub errno: i32,
    /// The error text.
    pub message: String,
}

/// A netlink route socket in the network namespace of the thread that opened it.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Open a socket in the current thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let io = |e: std::io::Error| NetlinkError {
            what: "open socket".into(),
            errno: e.raw_os_error().unwrap_or(0),
            message: e.to_string(),
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Send one request with an ACK and wait for the kernel's answer.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let err = |errno: i32, message: String| NetlinkError {
            what: what.to_string(),
            errno,
            message,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0u8; req.header.length as usize];
        req.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| err(e.raw_os_error().unwrap_or(0), e.to_string()))?;
        let mut rx = vec![0u8; 16384];
        loop {
            let n = self
                .socket
                .recv(&mut &mut rx[..], 0)
                .map_err(|e| err(e.raw_os_error().unwrap_or(0), e.to_string()))?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| err(0, format!("decode: {e}")))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = msg.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => {
                                let errno = -code.get();
                                Err(err(
                                    errno,
                                    std::io::Error::from_raw_os_error(errno).to_string(),
                                ))
                            }
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// Create a bridge named `name`; an existing link of that name is left as it is.
    pub fn create_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::IfName(name.to_string()));
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        match self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.errno == libc::EEXIST => Ok(()),
            other => other,
        }
    }

    /// Create a veth pair: `host` in this namespace, `peer` (with `mac`) in the network
    /// namespace open as `netns_fd`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        mac: [u8; 6],
        netns_fd: RawFd,
    ) -> Result<(), NetlinkError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::IfName(host.to_string()));
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("create veth {host}"),
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Put link `index` into bridge `bridge_index` and bring it up.
    pub fn enslave_up(&mut self, index: u32, bridge_index: u32) -> Result<(), NetlinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes
            .push(LinkAttribute::Controller(bridge_index));
        self.request("set master", RouteNetlinkMessage::SetLink(link), 0)
    }

    /// Bring link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request("set link up", RouteNetlinkMessage::SetLink(link), 0)
    }

    /// Delete link `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        self.request("delete link", RouteNetlinkMessage::DelLink(link), 0)
    }

    /// Add `ip/prefix` to link `index`; an address already there is not an error.
    pub fn add_address(
        &mut self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        let host_bits = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                u32::from(ip) | host_bits,
            )));
        match self.request(
            &format!("add address {ip}/{prefix}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.errno == libc::EEXIST => Ok(()),
            other => other,
        }
    }

    /// Add the default route via `gateway` on link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.protocol = RouteProtocol::Boot;
        r.header.scope = RouteScope::Universe;
        r.header.kind = RouteType::Unicast;
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        r.attributes.push(RouteAttribute::Oif(index));
        self.request(
            &format!("add default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(r),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

/// The index of interface `name` in the current thread's network namespace.
pub fn index_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
