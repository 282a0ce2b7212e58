//! The layers: the four real ones and the Appendix A mock.

pub mod aes;
pub mod mlkem;
pub mod mls;
pub mod mock;
pub mod signal;
