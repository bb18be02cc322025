//! How the pipeline shows its work in the notebook: every step's result as text (`Display`, for
//! logs and papermill) and as HTML (for Jupyter). Presentation only: the results are data
//! defined where they are made ([`crate::run`], [`crate::view`], [`crate::rebuild`],
//! [`crate::verify`]).

mod chart;
pub mod html;
mod run;
mod settings;
mod verify;
mod view;

use std::fmt;

pub use settings::Settings;

/// A step's output: text for logs and papermill (`Display`), HTML for Jupyter.
pub trait Shown: fmt::Display {
    /// The HTML form.
    fn html(&self) -> String;
}

/// A step's output as text and as HTML.
pub fn shown(output: &impl Shown) -> (String, String) {
    (output.to_string(), output.html())
}
