//! dptrain as a Flower SuperNode (flwr 1.42, issue 16): the codecs of Flower's wire
//! format. `npy`: NumPy's array files, the bytes of a Flower `Array`; `objects`: the object
//! trees messages travel as, with SHA-256 ids checked on every object received.

pub mod npy;
pub mod objects;
