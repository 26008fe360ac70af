//! What a plugin says about itself: [`PluginInfo`] and the [`Setting`]s it accepts.
//!
//! selfmon uses the declared settings to reject unknown keys in the operator's config, to fill in defaults, to check
//! value kinds, and to document the plugin in `selfmon plugins`.

use serde::Serialize;

use crate::__private::types;

/// A plugin's name, version, description and accepted settings.
///
/// ```
/// use selfmon_sdk::{PluginInfo, Setting};
///
/// let info = PluginInfo::new("ping", "1.0.0", "GETs a URL")
///     .config(Setting::text("method", "HTTP method").default("GET"))
///     .secret(Setting::text("token", "Bearer token sent with the request"));
/// ```
#[derive(Debug, Clone)]
pub struct PluginInfo {
    name: String,
    version: String,
    description: String,
    config: Vec<Setting>,
    secrets: Vec<Setting>,
    default_target: Option<String>,
}

impl PluginInfo {
    /// `name` is how operators refer to the plugin (`plugin = "ping"`): short, lowercase, unique.
    pub fn new(name: impl Into<String>, version: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            config: Vec::new(),
            secrets: Vec::new(),
            default_target: None,
        }
    }

    /// The target of a check that sets none. `${VAR}` and `${VAR:-fallback}` are replaced from the host's
    /// environment. selfmon honours this for its built-in plugins only (a target is also a network grant).
    pub fn default_target(mut self, target: impl Into<String>) -> Self {
        self.default_target = Some(target.into());
        self
    }

    /// Declare a key of the config table.
    pub fn config(mut self, setting: Setting) -> Self {
        self.config.push(setting);
        self
    }

    /// Declare a secret. Secret values reach the plugin through [`Context::secret`](crate::Context::secret) and are
    /// never logged or shown by selfmon.
    pub fn secret(mut self, setting: Setting) -> Self {
        self.secrets.push(setting);
        self
    }

    pub(crate) fn into_wit(self) -> types::PluginInfo {
        types::PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            config: self.config.into_iter().map(Setting::into_wit).collect(),
            secrets: self.secrets.into_iter().map(Setting::into_wit).collect(),
            default_target: self.default_target,
        }
    }
}

/// One accepted key: its name, what it holds, its default or whether it is required.
#[derive(Debug, Clone)]
pub struct Setting {
    name: String,
    description: String,
    kind: types::ValueKind,
    default: Option<String>,
    required: bool,
    env: Option<String>,
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $fn:ident => $kind:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(name: impl Into<String>, description: impl Into<String>) -> Self {
                Self::new(name, types::ValueKind::$kind, description)
            }
        )*
    };
}

impl Setting {
    fn new(name: impl Into<String>, kind: types::ValueKind, description: impl Into<String>) -> Self {
        Self { name: name.into(), description: description.into(), kind, default: None, required: false, env: None }
    }

    kinds! {
        /// A string.
        text => Text,
        /// A whole number.
        integer => Integer,
        /// Any number.
        number => Number,
        /// `true` or `false`.
        boolean => Boolean,
        /// A duration written as text: `"250ms"`, `"10s"`, `"5m"`. Deserialise it with [`crate::duration`].
        duration => Duration,
        /// An array.
        list => List,
        /// A table (a JSON object).
        table => Table,
        /// Any value.
        any => Any,
    }

    /// The value used when the operator leaves the key out.
    ///
    /// # Panics
    /// If the value cannot be serialised to JSON, which only happens for types with a broken `Serialize`.
    pub fn default(mut self, value: impl Serialize) -> Self {
        self.default = Some(serde_json::to_string(&value).expect("a setting's default serialises to JSON"));
        self
    }

    /// The operator must set this key.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// When the operator leaves the key out, use this environment variable if it is set (before the default).
    /// selfmon honours this for its built-in plugins only; a dropped-in plugin cannot read the host's environment.
    pub fn env(mut self, variable: impl Into<String>) -> Self {
        self.env = Some(variable.into());
        self
    }

    fn into_wit(self) -> types::Setting {
        types::Setting {
            name: self.name,
            description: self.description,
            kind: self.kind,
            default: self.default,
            required: self.required,
            env: self.env,
        }
    }
}
