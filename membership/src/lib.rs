//! Membership and placement for Shoal: SWIM gossip through `foca`, member records, and the
//! consistent-hash ring that gives every key its preference list (ARCHITECTURE §4, §5).
//!
//! Placeholder: the foundation runs a single node (N = 1), which needs neither gossip nor a
//! ring. The membership issue fills this crate; until then it deliberately holds no logic, so
//! nothing can mistake a stand-in for the real protocol.
