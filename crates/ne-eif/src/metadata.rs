// SPDX-License-Identifier: Apache-2.0
//! The metadata section: JSON describing how the image was built, with the keys
//! `eif_build` writes (nitro-cli's `describe-eif` requires every one of them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the image was built (`BuildMetadata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// When, RFC 3339.
    #[serde(rename = "BuildTime")]
    pub build_time: String,
    /// The tool that built it.
    #[serde(rename = "BuildTool")]
    pub build_tool: String,
    /// The tool's version.
    #[serde(rename = "BuildToolVersion")]
    pub build_tool_version: String,
    /// The kernel's operating system, e.g. `Linux`.
    #[serde(rename = "OperatingSystem")]
    pub operating_system: String,
    /// The kernel's version.
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
}

/// The metadata section's JSON object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The image's name.
    #[serde(rename = "ImageName")]
    pub image_name: String,
    /// The image's version.
    #[serde(rename = "ImageVersion")]
    pub image_version: String,
    /// How it was built.
    #[serde(rename = "BuildMetadata")]
    pub build_info: BuildInfo,
    /// The docker image it came from, if any (`null` otherwise).
    #[serde(rename = "DockerInfo")]
    pub docker_info: Value,
    /// Whatever the builder added (`null` if nothing).
    #[serde(rename = "CustomMetadata")]
    pub custom_info: Value,
}

impl Metadata {
    /// Metadata for an image named `name`, built now-ish (`build_time`) by `ne`.
    pub fn new(name: &str, version: &str, build_time: &str) -> Metadata {
        Metadata {
            image_name: name.to_owned(),
            image_version: version.to_owned(),
            build_info: BuildInfo {
                build_time: build_time.to_owned(),
                build_tool: "ne".to_owned(),
                build_tool_version: env!("CARGO_PKG_VERSION").to_owned(),
                operating_system: "Linux".to_owned(),
                kernel_version: "Unknown".to_owned(),
            },
            docker_info: Value::Null,
            custom_info: Value::Null,
        }
    }
}
