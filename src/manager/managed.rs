//! Your own types in a manager: the [`Managed`] trait and the [`managed!`](crate::managed)
//! macro that writes it (Python's `BaseManager.register`).

use crate::Result;

use super::proxy::Proxy;

/// A type whose values can live in a manager, reached through the proxy type [`Managed::Proxy`].
///
/// Write it with [`managed!`](crate::managed) rather than by hand.
pub trait Managed: Send + 'static {
    /// The name the type is registered under; clients ask for objects by it.
    const TYPE_NAME: &'static str;

    /// The proxy type.
    type Proxy: Proxy;

    /// Runs `method` with its postcard-encoded arguments and encodes its result.
    #[doc(hidden)]
    fn dispatch(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>>;
}

/// Helpers for the code [`managed!`](crate::managed) writes; not an API.
#[doc(hidden)]
pub mod __private {
    /// Decodes a call's arguments.
    pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
        super::super::wire::decode(bytes)
    }
    /// Encodes a method's result.
    pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> crate::Result<Vec<u8>> {
        super::super::wire::encode(value)
    }
    /// The error for a method the type does not have.
    pub fn unknown_method(type_name: &str, method: &str) -> crate::Error {
        super::super::served::unknown_method(type_name, method)
    }
}

/// Makes a type managed: its methods run in a manager, and a generated proxy type calls them
/// from any process (Python's `BaseManager.register('Maths', MathsClass)`).
///
/// Write the type's methods inside the macro, as an `impl` block headed `proxy <Name> for
/// <Type>`. The macro keeps them as ordinary methods of the type, implements [`Managed`] and
/// defines the proxy `<Name>`, whose methods have the same names and arguments, are `async`,
/// and return [`mp::Result`](crate::Result) of the method's return type.
///
/// - Methods take `&self` or `&mut self` (the object is behind a mutex in the manager: calls
///   run one at a time, each to completion) and arguments as `name: Type`; arguments and return
///   values are serde types.
/// - A method that returns `Result<T, E>` gives the caller `mp::Result<Result<T, E>>`: the
///   outer error is the manager's (gone, or the method panicked — [`Error::Remote`] with the
///   panic's message), the inner one is yours, typed.
/// - The type itself must be `Serialize + DeserializeOwned`: [`Manager::create`] moves an
///   initial value into the manager.
///
/// [`Error::Remote`]: crate::Error::Remote
/// [`Manager::create`]: crate::manager::Manager::create
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tokio_multiprocessing as mp;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Maths {
///     calls: u64,
/// }
///
/// mp::managed! {
///     pub proxy MathsProxy for Maths {
///         pub fn add(&mut self, x: i64, y: i64) -> i64 {
///             self.calls += 1;
///             x + y
///         }
///         pub fn calls(&self) -> u64 {
///             self.calls
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mp::Result<()> {
/// // In this process, on this runtime (`start()` would run it in a child process).
/// let manager = mp::Manager::builder().register::<Maths>().serve().await?;
/// let maths = manager.create(Maths::default()).await?;
/// assert_eq!(maths.add(4, 3).await?, 7);
/// assert_eq!(maths.calls().await?, 1);
/// # manager.shutdown().await
/// # }
/// ```
#[macro_export]
macro_rules! managed {
    (
        $(#[$proxy_attr:meta])*
        $vis:vis proxy $proxy:ident for $ty:ty {
            $(
                $(#[$fn_attr:meta])*
                $fn_vis:vis fn $method:ident ( $($params:tt)* ) $(-> $ret:ty)? $body:block
            )*
        }
    ) => {
        impl $ty {
            $(
                $(#[$fn_attr])*
                $fn_vis fn $method($($params)*) $(-> $ret)? $body
            )*
        }

        $(#[$proxy_attr])*
        #[doc = concat!("Proxy of a managed [`", stringify!($ty), "`]: its methods, called in the manager.")]
        #[derive(Clone, Debug)]
        $vis struct $proxy {
            core: $crate::manager::ProxyCore,
        }

        impl $proxy {
            $(
                $crate::managed!(@proxy_fn [$(#[$fn_attr])*] $fn_vis $method ($($params)*) ($($ret)?));
            )*
        }

        impl $crate::manager::Proxy for $proxy {
            const TYPE_NAME: &'static str = stringify!($ty);
            fn from_core(core: $crate::manager::ProxyCore) -> Self {
                $proxy { core }
            }
            fn core(&self) -> &$crate::manager::ProxyCore {
                &self.core
            }
        }

        impl $crate::__serde::Serialize for $proxy {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                $crate::__serde::Serialize::serialize(&self.core, s)
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $proxy {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                Ok($proxy { core: $crate::__serde::Deserialize::deserialize(d)? })
            }
        }

        impl $crate::manager::Managed for $ty {
            const TYPE_NAME: &'static str = stringify!($ty);
            type Proxy = $proxy;
            fn dispatch(&mut self, method: &str, args: &[u8]) -> $crate::Result<::std::vec::Vec<u8>> {
                $(
                    if method == stringify!($method) {
                        return $crate::managed!(@dispatch self, args, $method ($($params)*));
                    }
                )*
                let _ = args;
                Err($crate::manager::__private::unknown_method(stringify!($ty), method))
            }
        }
    };

    (@proxy_fn [$($attr:tt)*] $fn_vis:vis $method:ident (& $(mut)? self $(, $arg:ident : $arg_ty:ty)* $(,)?) ($($ret:ty)?)) => {
        $($attr)*
        ///
        /// # Errors
        ///
        /// [`Closed`]($crate::Error::Closed) when the manager is gone;
        /// [`Remote`]($crate::Error::Remote) when the method panicked in the manager.
        ///
        /// # Cancel safety
        ///
        /// A call dropped before its reply is withdrawn if the manager has not started it, and
        /// runs to completion there if it has.
        $fn_vis async fn $method(&self $(, $arg: $arg_ty)*) -> $crate::Result<$crate::managed!(@ret $($ret)?)> {
            self.core.call(stringify!($method), &($($arg,)*)).await
        }
    };

    (@dispatch $self:ident, $args:ident, $method:ident (& $(mut)? self $(, $arg:ident : $arg_ty:ty)* $(,)?)) => {{
        #[allow(unused_parens)]
        let ($($arg,)*): ($($arg_ty,)*) = $crate::manager::__private::decode($args)?;
        $crate::manager::__private::encode(&$self.$method($($arg),*))
    }};

    (@ret) => { () };
    (@ret $ret:ty) => { $ret };
}
