//! Integer identities. They are `Copy` and cheap to put into every event, so
//! the per-chunk path never clones a string to say which stream it is on.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// One logged-in client session, unique for the life of a server.
    ClientId,
    "c"
);
id_type!(
    /// One tunnel (a public listener or a forward), unique for the life of a server.
    TunnelId,
    "t"
);
id_type!(
    /// One visitor connection carried through a tunnel, unique for the life of a server.
    StreamId,
    "s"
);
